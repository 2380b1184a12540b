"""Upload validation for product images, shared by the REST API and the admin forms.

The type is decided by what Pillow reads from the bytes, never by the file name or the
client's Content-Type. Each rejection is a Django ``ValidationError`` with a ``code`` that
callers map to a response (see ``UPLOAD_ERROR_STATUS``): the admin shows the message on the
form, the API answers 413 / 415 / 400.
"""

from __future__ import annotations

import struct
import warnings
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import Image, UnidentifiedImageError

# Pillow format name -> what we call it in messages. MPO is how Pillow reads the multi-picture
# JPEGs many phone cameras write, so it counts as JPEG.
ALLOWED_FORMATS: dict[str, str] = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "WEBP": "WebP",
    "GIF": "GIF",
    "BMP": "BMP",
    "TIFF": "TIFF",
}
SUPPORTED_TYPES_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"

CODE_TOO_LARGE = "file_too_large"
CODE_UNSUPPORTED = "unsupported_media_type"
CODE_INVALID = "invalid_image"
CODE_TOO_MANY_PIXELS = "image_too_large"

# HTTP status for each rejection code (the API uses this; forms ignore it).
UPLOAD_ERROR_STATUS: dict[str, int] = {
    CODE_TOO_LARGE: 413,
    CODE_UNSUPPORTED: 415,
    CODE_INVALID: 400,
    CODE_TOO_MANY_PIXELS: 400,
}


def _human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"


def _file_size(file: Any) -> int | None:
    size = getattr(file, "size", None)
    if size is not None:
        return int(size)
    try:
        pos = file.tell()
        file.seek(0, 2)
        end = file.tell()
        file.seek(pos)
        return int(end)
    except (AttributeError, OSError):
        return None


def validate_upload_size(file: IO[bytes] | Any) -> None:
    """Rejects a file larger than settings.MAX_UPLOAD_BYTES (code ``file_too_large``)."""
    limit = settings.MAX_UPLOAD_BYTES
    size = _file_size(file)
    if size is not None and size > limit:
        raise ValidationError(
            f"The file is {_human_size(size)}; the largest accepted upload is {_human_size(limit)}. "
            "Resize or compress the image and upload it again.",
            code=CODE_TOO_LARGE,
        )


def validate_image_upload(file: IO[bytes] | Any) -> str:
    """Checks an uploaded image by decoding it; returns the format name (e.g. "JPEG").

    Raises ValidationError with code ``file_too_large`` (over MAX_UPLOAD_BYTES),
    ``unsupported_media_type`` (not an image, or a format we do not take), ``image_too_large``
    (more than MAX_IMAGE_PIXELS pixels: decompression bombs) or ``invalid_image`` (corrupt or
    truncated). The file is rewound afterwards so it can be saved.
    """
    validate_upload_size(file)
    if _file_size(file) == 0:
        raise ValidationError("The file is empty; choose an image file.", code=CODE_INVALID)
    max_pixels = settings.MAX_IMAGE_PIXELS
    try:
        fmt = _check_decodes(file, max_pixels=max_pixels)
    finally:
        if hasattr(file, "seek"):
            file.seek(0)
    return fmt


def _check_decodes(file: Any, *, max_pixels: int) -> str:
    file.seek(0)
    # Pillow warns (and past 2x its own limit raises) on huge images; our limit is checked
    # from the header first, so its warning would only be noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(file) as img:
                fmt = (img.format or "").upper()
                if fmt not in ALLOWED_FORMATS:
                    raise ValidationError(
                        f"{fmt or 'This'} images are not supported; upload a {SUPPORTED_TYPES_TEXT} image.",
                        code=CODE_UNSUPPORTED,
                    )
                width, height = img.size
                if width * height > max_pixels:
                    raise _too_many_pixels(width, height, max_pixels)
                # verify() checks structure (e.g. PNG chunk checksums) without decoding.
                img.verify()
            # verify() leaves the image unusable; decode a fresh copy to catch truncated data.
            file.seek(0)
            with Image.open(file) as img:
                img.load()
        except ValidationError:
            raise
        except UnidentifiedImageError:
            if _looks_like_supported_image(file):
                # The right magic bytes but Pillow cannot open it: a damaged file, not a wrong type.
                raise ValidationError(
                    "The image file is corrupt (its header cannot be read); save it again and re-upload.",
                    code=CODE_INVALID,
                ) from None
            raise ValidationError(
                f"The file is not an image we can read; upload a {SUPPORTED_TYPES_TEXT} image.",
                code=CODE_UNSUPPORTED,
            ) from None
        except Image.DecompressionBombError:
            raise ValidationError(
                f"The image has too many pixels; the limit is {max_pixels:,} pixels. "
                "Resize it and upload it again.",
                code=CODE_TOO_MANY_PIXELS,
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            # struct.error: some Pillow plugins let it escape on malformed headers.
            raise ValidationError(
                f"The image file is corrupt or truncated ({exc}); save it again and re-upload.",
                code=CODE_INVALID,
            ) from None
    return ALLOWED_FORMATS[fmt]


def _looks_like_supported_image(file: Any) -> bool:
    file.seek(0)
    head = file.read(12)
    return head.startswith(
        (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
    ) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _too_many_pixels(width: int, height: int, max_pixels: int) -> ValidationError:
    return ValidationError(
        f"The image is {width}x{height} pixels; the limit is {max_pixels:,} pixels. "
        "Resize it and upload it again.",
        code=CODE_TOO_MANY_PIXELS,
    )
