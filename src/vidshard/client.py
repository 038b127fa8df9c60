"""A Python client of ``vidshard serve``: submit, upload, watch, cancel and download jobs.

    with vidshard.Client("http://127.0.0.1:8000", api_key="...") as client:
        job = client.submit(upload="clip.mp4", model="lanczos", scale=2)
        client.wait(job.id)
        client.download(job.id, "clip-x2.mp4")

It needs only httpx (and rich, for the progress bar of :meth:`Client.wait`): nothing of
the service is imported. Every HTTP error becomes a :class:`ServiceError` subclass that
carries the server's status, error type and detail.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from vidshard.client_bar import WaitBar
from vidshard.errors import (
    Cancelled,
    ConfigError,
    InputError,
    OutputError,
    VidshardError,
    write_failure,
)

if TYPE_CHECKING:
    from rich.console import Console

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
TRANSIENT_STATUSES = frozenset({502, 503, 504})
TRANSIENT_WINDOW_S = 30.0  # wait() rides out an unreachable or restarting server this long
CHUNK_BYTES = 1 << 20
_JOB_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")


# --- errors ------------------------------------------------------------------------------


class ServiceError(VidshardError):
    """The service refused a request or could not be reached.

    ``status`` is the HTTP status (None when no answer came), ``error`` the server's
    error type (``InputError``, ``NotFound``...) and ``detail`` its message.
    """

    def __init__(
        self, message: str, *, status: int | None = None, error: str = "", detail: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.detail = detail or message


class ServiceUnreachable(ServiceError):
    """No answer: connection refused, DNS failure, or a timeout."""

    exit_code = 1


class AuthError(ServiceError):
    """HTTP 401: the API key is missing or wrong."""


class ForbiddenError(ServiceError):
    """HTTP 403: well formed, but not allowed here (a path outside the input roots...)."""


class NotFoundError(ServiceError):
    """HTTP 404: no such job or upload (or the result has expired)."""


class ConflictError(ServiceError):
    """HTTP 409: the job's state does not allow it (cancel a finished job, download a
    running one's result)."""


class TooLargeError(ServiceError):
    """HTTP 413: the upload or request body is over the server's limit."""


class InvalidRequestError(ServiceError):
    """HTTP 422: a parameter out of range, or an input that is not a usable video."""


class ServerError(ServiceError):
    """HTTP 5xx: the service failed."""

    exit_code = 1


class JobFailed(VidshardError):
    """The job ended ``failed``; ``job`` is its final state, ``job.error`` the reason."""

    exit_code = 1

    def __init__(self, job: Job) -> None:
        kind = f" ({job.error_type})" if job.error_type else ""
        super().__init__(f"job {job.id} failed{kind}: {job.error or 'no reason given'}")
        self.job = job


_STATUS_ERRORS: dict[int, type[ServiceError]] = {
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
    422: InvalidRequestError,
}


def error_from_response(response: httpx.Response, method: str, path: str) -> ServiceError:
    """The typed error of a 4xx/5xx answer (its body already read)."""
    status = response.status_code
    error, detail = response.reason_phrase or "HTTPError", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = str(body.get("error") or error)
        raw = body.get("detail")
        detail = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    if not detail:
        detail = response.text.strip()[:300] or f"HTTP {status}"
    cls = _STATUS_ERRORS.get(status) or (ServerError if status >= 500 else ServiceError)
    message = f"{detail} (HTTP {status} {error} from {method} {path})"
    return cls(message, status=status, error=error, detail=detail)


# --- the job -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A job as the service last reported it (``GET /v1/jobs/{id}``); ``raw`` is the
    whole answer, with fields this class does not name (params, timestamps, attempts)."""

    id: str
    state: str
    progress: float
    frames_done: int
    frames_total: int | None
    fps: float | None
    queue_position: int | None
    eta_s: float | None
    error: str | None
    error_type: str | None
    result_url: str | None
    result_path: str | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def done(self) -> bool:
        """Whether the job is final: succeeded, failed or cancelled."""
        return self.state in FINAL_STATES

    @classmethod
    def from_view(cls, view: Mapping[str, Any]) -> Job:
        """A :class:`Job` from the JSON of a job view."""
        try:
            result = view.get("result") or {}
            return cls(
                id=str(view["id"]),
                state=str(view["state"]),
                progress=float(view.get("progress") or 0.0),
                frames_done=int(view.get("frames_done") or 0),
                frames_total=_opt_int(view.get("frames_total")),
                fps=_opt_float(view.get("fps")),
                queue_position=_opt_int(view.get("queue_position")),
                eta_s=_opt_float(view.get("eta_s")),
                error=view.get("error"),
                error_type=view.get("error_type"),
                result_url=result.get("url"),
                result_path=result.get("path"),
                raw=dict(view),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ServiceError(
                f"expected a job view (id, state, progress...), got {_short(view)}: {exc!r}"
            ) from None


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --- the client --------------------------------------------------------------------------


class Client:
    """A connection to one ``vidshard serve``. Thread-safe; close it (or use ``with``)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"url: expected http(s)://HOST[:PORT], got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {API_KEY_HEADER: api_key} if api_key is not None else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # --- jobs --------------------------------------------------------------------------

    def submit(
        self,
        input: str | os.PathLike[str] | None = None,
        *,
        upload: str | os.PathLike[str] | None = None,
        upload_id: str | None = None,
        input_url: str | None = None,
        model: str | None = None,
        scale: int | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
        output_name: str | None = None,
        task: str = "upscale",
        **params: Any,
    ) -> Job:
        """Queue a job: ``task`` is ``upscale`` (the default), ``detect`` or ``track``.
        The input is exactly one of ``input`` (a path on the *server*, inside its input
        roots), ``upload`` (a local file, uploaded first), ``upload_id`` (from
        :meth:`upload`) or ``input_url``. ``params`` are the task's other options
        (upscale: ``tile``, ``crf``, ``preset``...; detect/track: ``prompt``, ``conf``,
        ``classes``, ``fps``, ``annotate``, ``tracker``...).

        With ``idempotency_key``, a repeat returns the first job instead of a new one.
        """
        given = {
            "input": input,
            "upload": upload,
            "upload_id": upload_id,
            "input_url": input_url,
        }
        named = [name for name, value in given.items() if value is not None]
        if len(named) != 1:
            raise InputError(
                "give exactly one of input (a server path), upload (a local file), "
                f"upload_id or input_url; got {', '.join(named) or 'none'}"
            )
        if upload is not None:
            upload_id = self.upload(upload)
        job_params = dict(params)
        if model is not None:
            job_params["model"] = model
        if scale is not None:
            job_params["scale"] = scale
        body: dict[str, Any] = {"task": task, "priority": priority, "params": job_params}
        if input is not None:
            body["input"] = os.fspath(input)
        elif upload_id is not None:
            body["upload_id"] = upload_id
        else:
            body["input_url"] = input_url
        if output_name is not None:
            body["output_name"] = output_name
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        return Job.from_view(self._json("POST", "/v1/jobs", json=body, headers=headers))

    def upload(self, path: str | os.PathLike[str]) -> str:
        """Upload a local file (streamed, never read whole); returns its upload id."""
        source = Path(path)
        if not source.is_file():
            what = "not found" if not source.exists() else "not a regular file"
            raise InputError(f"cannot upload {source}: {what}")
        try:
            with source.open("rb") as fh:
                files = {"file": (source.name, fh, "application/octet-stream")}
                answer = self._json("POST", "/v1/uploads", files=files)
        except OSError as exc:
            raise InputError(f"cannot upload {source}: {exc.strerror or exc}") from exc
        try:
            return str(answer["upload_id"])
        except (KeyError, TypeError):
            raise ServiceError(f"expected an upload view, got {_short(answer)}") from None

    def status(self, job_id: str | Job) -> Job:
        return Job.from_view(self._json("GET", f"/v1/jobs/{_job_id(job_id)}"))

    def jobs(
        self, state: str | Sequence[str] | None = None, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        """Jobs, newest first; ``state`` filters on one state or several."""
        query: dict[str, Any] = {"limit": limit, "offset": offset}
        if state is not None:
            query["state"] = [state] if isinstance(state, str) else list(state)
        answer = self._json("GET", "/v1/jobs", params=query)
        if not isinstance(answer, dict) or not isinstance(answer.get("jobs"), list):
            raise ServiceError(f"expected a job list, got {_short(answer)}")
        return [Job.from_view(view) for view in answer["jobs"]]

    def cancel(self, job_id: str | Job) -> Job:
        """Cancel a queued or running job; :class:`ConflictError` if it already ended."""
        return Job.from_view(self._json("POST", f"/v1/jobs/{_job_id(job_id)}/cancel"))

    def wait(
        self,
        job_id: str | Job,
        *,
        timeout: float | None = None,
        poll_s: float = 0.5,
        progress: bool = True,
        console: Console | None = None,
    ) -> Job:
        """Poll until the job ends and return it when it succeeded.

        Raises :class:`~vidshard.errors.Cancelled` if it was cancelled, :class:`JobFailed`
        (with the server's reason) if it failed, and ``TimeoutError`` after ``timeout``
        seconds. With ``progress``, a rich bar (on ``console``, default stderr) shows the
        state, frames, fps and the server's ETA. A server that is briefly unreachable or
        answers 502/503/504 is polled again for up to 30 s.
        """
        job_key = _job_id(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        with WaitBar(job_key, progress, console) as bar:
            while True:
                job = self._poll(job_key)
                bar.update(job)
                if job.done:
                    break
                pause = poll_s
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(
                            f"job {job_key} is still {job.state} after {timeout:g} s "
                            f"({job.frames_done}/{job.frames_total or '?'} frames)"
                        )
                    pause = min(pause, left)
                time.sleep(pause)
        if job.state == "cancelled":
            raise Cancelled(f"job {job.id} was cancelled")
        if job.state == "failed":
            raise JobFailed(job)
        return job

    def download(
        self, job_id: str | Job, path: str | os.PathLike[str], *, name: str | None = None
    ) -> Path:
        """Save a succeeded job's output to ``path``: streamed to ``path.partial``, then
        renamed, so ``path`` is either absent or whole. Returns ``path``. ``name`` picks
        another of the job's files (``result.files``: a detect job's annotated video)."""
        target = Path(path)
        if target.is_dir():
            raise OutputError(f"cannot download to {target}: it is a directory")
        if not target.parent.is_dir():
            raise OutputError(f"output directory does not exist: {target.parent}")
        partial = target.with_name(target.name + ".partial")
        try:
            # The file is opened only once the answer is a 200: an error leaves nothing.
            with (
                self._stream(
                    "GET",
                    f"/v1/jobs/{_job_id(job_id)}/result",
                    params={"name": name} if name is not None else None,
                ) as response,
                partial.open("wb") as out,
            ):
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise write_failure(exc, str(target)) or OutputError(
                f"cannot write {target}: {exc}"
            ) from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return target

    # --- system ------------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        """Each device of the pool: memory, utilisation, its slots and their fps."""
        answer = self._json("GET", "/v1/devices")
        if not isinstance(answer, list):
            raise ServiceError(f"expected a device list, got {_short(answer)}")
        return answer

    def health(self) -> dict[str, Any]:
        """The service's health report. An unhealthy service (503) still returns it,
        with ``status: "unhealthy"`` and its reasons, rather than raising."""
        with self._transport_errors("GET", "/health"):
            response = self._http.get("/health")
        if response.status_code not in (200, 503):
            raise error_from_response(response, "GET", "/health")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ServiceError(f"expected a health report, got {_short(response.text)}")
        return answer

    # --- plumbing ----------------------------------------------------------------------

    def _poll(self, job_id: str) -> Job:
        """One status read for :meth:`wait`, riding out a short outage."""
        first_failure: float | None = None
        while True:
            try:
                return self.status(job_id)
            except ServiceError as exc:
                transient = isinstance(exc, ServiceUnreachable) or exc.status in TRANSIENT_STATUSES
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if not transient or now - first_failure > TRANSIENT_WINDOW_S:
                    raise
                logger.warning("polling job %s: %s; trying again", job_id, exc)
                time.sleep(1.0)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._transport_errors(method, path):
            response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise error_from_response(response, method, path)
        try:
            return response.json()
        except ValueError:
            raise ServiceError(
                f"expected JSON from {method} {path}, got {_short(response.text)}",
                status=response.status_code,
            ) from None

    @contextmanager
    def _stream(
        self, method: str, path: str, params: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        with (
            self._transport_errors(method, path),
            self._http.stream(method, path, params=params) as response,
        ):
            if response.is_error:
                response.read()
                raise error_from_response(response, method, path)
            yield response

    @contextmanager
    def _transport_errors(self, method: str, path: str) -> Iterator[None]:
        """httpx's transport errors as :class:`ServiceUnreachable` naming the URL."""
        try:
            yield
        except httpx.ConnectError as exc:
            raise ServiceUnreachable(
                f"cannot connect to the vidshard service at {self.url} ({exc}); "
                "is `vidshard serve` running there?"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ServiceUnreachable(
                f"no answer from {self.url} to {method} {path} within {self.timeout:g} s "
                f"({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise ServiceUnreachable(
                f"{method} {self.url}{path} failed: {type(exc).__name__}: {exc}"
            ) from exc


def _job_id(job: str | Job) -> str:
    value = job.id if isinstance(job, Job) else job
    if not isinstance(value, str) or not _JOB_ID.fullmatch(value):
        raise InputError(f"job id: expected letters, digits, '-' or '_', got {value!r}")
    return value
