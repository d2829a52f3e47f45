import io

import numpy as np
import pytest
from PIL import Image

from mycolens.inference.preprocess import ImageRejected, decode_image, load_for_model, resize_center_crop


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_exif_rotated_photo_is_stored_upright():
    img = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = decode_image(encode(img, exif=exif.tobytes()))
    assert out.size == (20, 40)


@pytest.mark.parametrize(
    "img",
    [
        Image.new("CMYK", (16, 16), (0, 255, 255, 0)),
        Image.new("L", (16, 16), 128),
        Image.new("RGBA", (16, 16), (0, 0, 255, 128)),
        Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)),
    ],
    ids=["cmyk", "gray", "rgba", "16bit"],
)
def test_any_mode_becomes_rgb(img):
    fmt = "JPEG" if img.mode in ("CMYK", "L") else "PNG"
    out = decode_image(encode(img, fmt))
    assert out.mode == "RGB" and out.size == (16, 16)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"hello, I am text", "not_image"),
        (encode(Image.new("RGB", (64, 64), 9))[:200], "truncated"),
        (encode(Image.new("RGB", (8, 8)), "GIF"), "unsupported"),
        (encode(Image.new("RGB", (8, 8)), "TIFF"), "unsupported"),
    ],
    ids=["empty", "text", "truncated", "gif", "tiff"],
)
def test_bad_bytes_are_rejected_with_a_code(data, code):
    with pytest.raises(ImageRejected) as exc:
        decode_image(data)
    assert exc.value.code == code


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("L", (5000, 5000), 0), "PNG")  # tiny file, 25 Mpx
    assert len(bomb) < 100_000
    with pytest.raises(ImageRejected) as exc:
        decode_image(bomb, max_pixels=1_000_000)
    assert exc.value.code == "too_large"


def test_model_input_shape_and_normalization():
    img = Image.new("RGB", (80, 40), (255, 255, 255))
    assert resize_center_crop(img, 32).shape == (32, 32, 3)
    x = load_for_model(encode(img, "PNG"), 32, [0.5] * 3, [0.5] * 3)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x, 1.0)
