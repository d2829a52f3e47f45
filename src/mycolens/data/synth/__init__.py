"""Procedurally drawn mushroom photos: each species' look comes from its catalogue `appearance` traits.

A tiny orthographic ray caster (numpy) shades caps, undersides, stems, rings and volvas in 3D on a ground drawn
with PIL, at 2x-4x the output size, then downsamples with antialiasing. PIL + numpy only; nothing is downloaded.
Every random choice comes from the numpy Generator passed in, so the same generator state gives the same image.

Modules: `appearance` (species traits -> one specimen), `raycast` and `shapes` (the 3D mushroom parts), `photo`
(pose, light, occluders: the render API). Grounds, the camera and not-a-mushroom images live in
`mycolens.data.scenes`, which draws no mushroom; they are re-exported here.
"""

from mycolens.data.scenes.ground import BACKGROUNDS
from mycolens.data.scenes.ood import OOD_KINDS, render_ood
from mycolens.data.scenes.paint import supersample
from mycolens.data.synth.appearance import CAPS, SPOTS, STEMS, TEXTURES, UNDERSIDES, check_appearance, make_specimen
from mycolens.data.synth.photo import render_photo, render_specimen_photos

SYNTH_VERSION = 1  # bump when the drawings change (mushrooms, grounds or OOD scenes): it is recorded in the manifest

__all__ = [
    "BACKGROUNDS",
    "CAPS",
    "OOD_KINDS",
    "SPOTS",
    "STEMS",
    "SYNTH_VERSION",
    "TEXTURES",
    "UNDERSIDES",
    "check_appearance",
    "make_specimen",
    "render_ood",
    "render_photo",
    "render_specimen_photos",
    "supersample",
]
