import io

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from catalog.validators import UPLOAD_ERROR_STATUS, validate_image_upload
from tests.conftest import make_image


def upload(data: bytes, name: str = "x.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def rejection_code(file) -> str:
    with pytest.raises(ValidationError) as info:
        validate_image_upload(file)
    return info.value.code


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("JPEG", "JPEG"),
        ("PNG", "PNG"),
        ("WEBP", "WebP"),
        ("GIF", "GIF"),
        ("BMP", "BMP"),
        ("TIFF", "TIFF"),
    ],
)
def test_every_supported_format_is_accepted(fmt, expected):
    assert validate_image_upload(upload(make_image(fmt=fmt))) == expected


def test_type_comes_from_the_bytes_not_the_file_name():
    # A PNG named .txt is an image; a text file named .jpg is not.
    assert validate_image_upload(upload(make_image(fmt="PNG"), "notes.txt")) == "PNG"
    assert rejection_code(upload(b"hello, I am text", "photo.jpg")) == "unsupported_media_type"


def test_an_image_format_we_do_not_take_is_unsupported():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, format="ICO")
    file = upload(buf.getvalue(), "favicon.ico")
    assert rejection_code(file) == "unsupported_media_type"
    assert UPLOAD_ERROR_STATUS["unsupported_media_type"] == 415


def test_truncated_image_is_invalid():
    data = make_image(fmt="JPEG", size=(256, 256))
    assert rejection_code(upload(data[: len(data) // 2], "cut.jpg")) == "invalid_image"


@pytest.mark.parametrize("offset", [30, 60], ids=["header-checksum", "data-checksum"])
def test_png_with_a_broken_checksum_is_invalid_not_unsupported(offset):
    data = bytearray(make_image(fmt="PNG"))
    data[offset] ^= 0xFF
    assert rejection_code(upload(bytes(data))) == "invalid_image"


def test_empty_file_is_invalid():
    assert rejection_code(upload(b"", "empty.png")) == "invalid_image"


def test_file_over_the_byte_limit_is_too_large(settings):
    settings.MAX_UPLOAD_BYTES = 1000
    data = make_image(fmt="BMP", size=(64, 64))  # ~12 KB uncompressed
    with pytest.raises(ValidationError) as info:
        validate_image_upload(upload(data, "big.bmp"))
    assert info.value.code == "file_too_large"
    assert "1000 bytes" in info.value.messages[0]
    assert UPLOAD_ERROR_STATUS["file_too_large"] == 413


def test_decompression_bomb_is_rejected_before_decoding(settings):
    settings.MAX_IMAGE_PIXELS = 100 * 100
    # Small file, many pixels: a flat PNG compresses to almost nothing.
    data = make_image(size=(400, 400), shape="none")
    assert len(data) < 5000
    with pytest.raises(ValidationError) as info:
        validate_image_upload(upload(data))
    assert info.value.code == "image_too_large"
    assert "400x400" in info.value.messages[0]


def test_file_is_rewound_after_checking():
    file = upload(make_image())
    validate_image_upload(file)
    assert file.tell() == 0
