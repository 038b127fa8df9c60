"""A job's input, checked: a path inside the input roots (by the open file's own path,
its identity recorded), an upload of the same key, or a URL the host rules allow; and,
when the job runs, the same file again."""

from __future__ import annotations

import uuid
from pathlib import Path

from vidshard.errors import VidshardError
from vidshard.media.source import FileIdentity, file_identity
from vidshard.tasks.registry import AnyTask

from . import security
from .auth import Principal, upload_owner, write_upload_owner
from .download import DownloadPolicy
from .errors import NotFound, clipped
from .schemas import JobRequest
from .settings import ServiceSettings
from .store import JobRecord

InputKind = str  # "path", "upload" or "url"


class JobInputs:
    """The input checks of one service's settings."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings

    def of(
        self, request: JobRequest, principal: Principal
    ) -> tuple[str, InputKind, FileIdentity | None]:
        """(the input as stored: a real path, or a URL; its kind; the file's identity)."""
        if request.input is not None:
            path, identity = security.check_input_file(request.input, self.settings.input_roots)
            return str(path), "path", identity
        if request.upload_id is not None:
            path = self.upload_path(request.upload_id, principal)
            return str(path), "upload", file_identity(path)
        assert request.input_url is not None
        url = DownloadPolicy.of(self.settings).check(request.input_url)
        return url, "url", None

    def source_identity(self, record: JobRecord) -> FileIdentity | None:
        """At run time: a path input still inside the input roots, and the identity it had
        at submit, which every open of the job compares (a swapped file is refused)."""
        if record.input_kind == "path":
            security.resolve_input_path(record.input_path, self.settings.input_roots)
        if record.input_identity is None:  # a URL input, or a job stored before identities
            return None
        return FileIdentity.from_dict(record.input_identity)

    def new_upload(self, filename: str, principal: Principal) -> tuple[str, Path]:
        """A fresh upload id, owned by ``principal``, and the path its bytes go to."""
        upload_id = uuid.uuid4().hex
        folder = self.settings.uploads_dir / upload_id
        folder.mkdir(parents=True)
        write_upload_owner(folder, principal)
        return upload_id, folder / security.safe_filename(filename, "upload.mp4")

    def upload_path(self, upload_id: str, principal: Principal) -> Path:
        """The file of an upload ``principal`` may use (another key's is not found)."""
        folder = self.settings.uploads_dir / upload_id
        files = (
            [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
            if folder.is_dir()
            else []
        )
        if len(files) != 1 or not principal.owns(upload_owner(folder)):
            raise NotFound(f"no upload {clipped(upload_id)}")
        return files[0]


def probe_input(task: AnyTask, source: str, kind: InputKind, identity: FileIdentity | None) -> None:
    """Check an input at submit as its task reads it (a video probed, an image opened);
    an upload's problem names the upload, not the server path it was stored at (the
    client knows its file by name)."""
    try:
        task.check_input(Path(source), identity)
    except VidshardError as exc:
        if kind == "upload":
            exc.args = (str(exc).replace(source, f"upload {Path(source).name}"),)
        raise
