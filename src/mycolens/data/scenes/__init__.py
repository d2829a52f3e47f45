"""What the synthetic photos show besides a mushroom: grounds, the camera, and not-a-mushroom (OOD) images.

Split from the mushroom renderer (`mycolens.data.synth`) so the OOD rows of training and ingest import no mushroom code.
"""
