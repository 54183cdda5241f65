"""The images of a request: multipart `file` parts, or one raw body of an image type (/classify, /compare)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.types import Scope

from service.api.limits import safe_text
from service.core.errors import InvalidParameter, UnsupportedMediaType
from service.core.settings import Settings
from service.images.preprocess import ACCEPTED_MEDIA_TYPES


@dataclass(frozen=True)
class Upload:
    filename: str | None  # None for a raw body
    data: bytes


def media_type_of(scope: Scope) -> str:
    """A request's media type: its Content-Type without parameters, in lower case; "" without one."""
    for key, value in scope["headers"]:
        if key == b"content-type":
            return str(value.decode("latin-1")).split(";")[0].strip().lower()
    return ""


async def read_uploads(request: Request, settings: Settings) -> list[Upload]:
    """Every uploaded image, in order; 415 for another body type, 422 for a multipart body without files."""
    media = media_type_of(request.scope)
    if media == "multipart/form-data":
        limit = settings.max_files_per_request
        async with request.form(max_files=limit, max_fields=limit) as form:
            uploads = []
            for part in form.getlist("file"):
                if not isinstance(part, UploadFile):
                    raise InvalidParameter("Each `file` part must be a file upload, not a text field.")
                uploads.append(Upload(filename=safe_text(part.filename), data=await part.read()))
        if not uploads:
            raise InvalidParameter("The multipart body has no part named `file`; send one or more images.")
        return uploads
    if media in ACCEPTED_MEDIA_TYPES:
        return [Upload(filename=None, data=await request.body())]
    shown = media or "none"
    raise UnsupportedMediaType(
        f"Content-Type {shown} is not accepted; send multipart/form-data with `file` parts, "
        f"or a raw body of type {', '.join(sorted(ACCEPTED_MEDIA_TYPES))}."
    )
