"""Predict offline, as the HTTP API would answer: `python scripts/predict.py path=IMG_OR_DIR [format=json|csv]
[output=FILE] [top_k=3] [serve.variant=fp32|int8] [serve.model_dir=models/export]`.

No server and no Ray: the model folder is verified (hashes, safety gate) and run by ONNX Runtime. A file that is not a
usable image is reported with the API's error code (empty, truncated, not_image, unsupported, too_large, too_small).
Exit code 0 when every file was answered, 1 when some were rejected, 2 on a usage error or a refused model.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@task
def main(cfg: DictConfig) -> int:
    from mycolens.cli import UserError
    from mycolens.inference.onnx_model import ModelRefused, OnnxClassifier
    from mycolens.inference.predict import collect_images, predict_files, render

    if not cfg.path:
        raise UserError("give the image or folder to predict: python scripts/predict.py path=photo.jpg")
    fmt = str(cfg.format)
    if fmt not in ("json", "csv"):
        raise UserError(f"format={fmt}: use format=json or format=csv")
    files = collect_images(cfg.path)
    if not files:
        raise UserError(f"no image files (.jpg, .png, .webp, ...) under {cfg.path}")
    try:
        model = OnnxClassifier.load(
            cfg.serve.model_dir, str(cfg.serve.variant), threads=int(cfg.serve.get("threads", 0))
        )
    except ModelRefused as exc:
        raise UserError(f"model refused: {exc}") from None
    records = predict_files(files, model, top_k=int(cfg.top_k))
    text = render(records, fmt, single=Path(cfg.path).is_file())
    if cfg.output:
        from mycolens.utils.io import write_bytes_atomic

        write_bytes_atomic(cfg.output, text.encode())
        print(f"wrote {len(records)} predictions to {cfg.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    failed = sum("error" in r for r in records)
    if failed:
        print(f"{failed} of {len(records)} files were not usable images (see their error codes)", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
