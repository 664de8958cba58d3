"""The WSGI application of the local vault service: HTTP in, Store/Jobs calls, HTTP out.

Each request: route to an operation -> count it (and maybe pick a fault) -> verify SigV4, the
version header and the account -> inject the fault or run the operation -> JSON or empty reply
with x-amzn-RequestId. Routing and header parsing are werkzeug's; the rules are ours.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Callable, Iterable, Iterator

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import validation
from .auth import Credentials, verify
from .config import ServerConfig
from .errors import (
    AccessDenied,
    GlacierError,
    InvalidParameterValue,
    MissingParameterValue,
    RequestTimeout,
    ResourceNotFound,
    SerializationError,
    ServerFault,
    Throttling,
    UnknownOperation,
)
from .faults import AFTER_KINDS, FaultInjector
from .jobs import Jobs
from .store import Store

log = logging.getLogger(__name__)

API_VERSION = "2012-06-01"
STREAMING = frozenset({"UploadArchive", "UploadMultipartPart"})
MAX_JSON_BODY = 1 << 20

V = "/<account>/vaults/<vault>"
ROUTES = Map(
    [
        Rule("/<account>/vaults", methods=["GET"], endpoint="ListVaults"),
        Rule(V, methods=["PUT"], endpoint="CreateVault"),
        Rule(V, methods=["GET"], endpoint="DescribeVault"),
        Rule(V, methods=["DELETE"], endpoint="DeleteVault"),
        Rule(V + "/archives", methods=["POST"], endpoint="UploadArchive"),
        Rule(V + "/archives/<archive_id>", methods=["DELETE"], endpoint="DeleteArchive"),
        Rule(V + "/multipart-uploads", methods=["POST"], endpoint="InitiateMultipartUpload"),
        Rule(V + "/multipart-uploads", methods=["GET"], endpoint="ListMultipartUploads"),
        Rule(V + "/multipart-uploads/<upload_id>", methods=["PUT"],
             endpoint="UploadMultipartPart"),
        Rule(V + "/multipart-uploads/<upload_id>", methods=["POST"],
             endpoint="CompleteMultipartUpload"),
        Rule(V + "/multipart-uploads/<upload_id>", methods=["DELETE"],
             endpoint="AbortMultipartUpload"),
        Rule(V + "/multipart-uploads/<upload_id>", methods=["GET"], endpoint="ListParts"),
        Rule(V + "/jobs", methods=["POST"], endpoint="InitiateJob"),
        Rule(V + "/jobs", methods=["GET"], endpoint="ListJobs"),
        Rule(V + "/jobs/<job_id>", methods=["GET"], endpoint="DescribeJob"),
        Rule(V + "/jobs/<job_id>/output", methods=["GET"], endpoint="GetJobOutput"),
    ],
    strict_slashes=False,
    merge_slashes=False,
)
OPERATIONS = frozenset(rule.endpoint for rule in ROUTES.iter_rules())
ADMIN_PREFIX = "/_glacierfs/"


class InjectedDrop(Exception):
    """Raised mid-response to make the HTTP server drop the connection (fault kind `drop`)."""


class Call:
    """One request as the operations see it."""

    def __init__(self, request: Request, args: dict, body: bytes) -> None:
        self.request = request
        self.args = args
        self.body = body
        self.vault: str = args.get("vault", "")

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)

    def query(self, name: str) -> str | None:
        return self.request.args.get(name)

    def content_length(self) -> int:
        return validation.content_length(self.request.environ.get("CONTENT_LENGTH"))


class GlacierApp:
    def __init__(self, config: ServerConfig, credentials: Credentials) -> None:
        self.config = config
        self.credentials = {credentials.access_key: credentials}
        self.store = Store(config)
        self.jobs = Jobs(self.store)
        self.faults = FaultInjector(OPERATIONS, config.faults, config.seed)
        self._ops: dict[str, Callable[[Call], Response]] = {
            name: getattr(self, "op_" + name) for name in OPERATIONS
        }

    def close(self) -> None:
        self.store.db.close()

    # ---- the request pipeline -----------------------------------------------------------

    def __call__(self, environ, start_response):
        request_id = secrets.token_urlsafe(39)
        request = Request(environ)
        if self.config.latency_ms:
            time.sleep(self.config.latency_ms / 1000)
        if request.path.startswith(ADMIN_PREFIX):
            response = self._admin(request)
        else:
            response = self._handle(request)
        response.headers["x-amzn-RequestId"] = request_id
        # A refused request's body is left unread. The HTTP server would read all of it, in
        # one piece, to keep the connection: a huge Content-Length took that much memory.
        environ.get("glacierfs.close_if_unread", lambda: None)()
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        operation = "Unknown"
        streamed = False
        try:
            operation, args = self._route(request)
            fault = self.faults.next_fault(operation)
            headers = {k.lower(): v for k, v in request.headers.items()}
            body = b""
            streamed = operation in STREAMING
            if not streamed:
                body = self._read_small_body(request)
            verify(
                method=request.method,
                raw_path=_raw_path(request.environ),
                raw_query=request.environ.get("QUERY_STRING", ""),
                headers=headers,
                payload_hash=headers.get("x-amz-content-sha256") if streamed else None,
                body=body,
                credentials=self.credentials,
                region=self.config.region,
            )
            if request.headers.get("x-amz-glacier-version") is None:
                raise MissingParameterValue("Required header x-amz-glacier-version is missing")
            if request.headers["x-amz-glacier-version"] != API_VERSION:
                raise InvalidParameterValue(
                    f"Invalid x-amz-glacier-version: {request.headers['x-amz-glacier-version']}"
                )
            if args["account"] not in ("-", self.config.account_id):
                raise AccessDenied(f"Access denied to account {args['account']}")
            if fault == "hang":
                log.info("fault injected: %s hang", operation)
                self.faults.hold()
                fault = "503"
            if fault and fault not in AFTER_KINDS:
                return self._inject(fault, operation, request, args, streamed)
            self.store.sweep()
            response = self._ops[operation](Call(request, args, body))
            log.debug("%s %s -> %d", operation, request.path, response.status_code)
            if fault == "job-fails":
                log.info("fault injected: %s job-fails", operation)
                self.jobs.fail(response.headers["x-amz-job-id"],
                               "Archive retrieval failed (injected fault)")
            if fault == "corrupt":
                log.info("fault injected: %s corrupt (a byte of the reply flipped)", operation)
                length = response.headers.get("Content-Length") or (
                    response.calculate_content_length() or 0)
                response.response = _flipping(response.response, int(length) // 2)
            if fault == "hang-after":
                log.info("fault injected: %s hang-after (done, reply held)", operation)
                self.faults.hold()
            return response
        except GlacierError as error:
            if streamed:
                _drain(request)
            log.debug("%s %s -> %d %s: %s", operation, request.path, error.status, error.code,
                      error.message)
            return error_response(error)
        except Exception:
            log.exception("unexpected error in %s %s", operation, request.path)
            if streamed:
                _drain(request)
            return error_response(ServerFault(500, "Internal server error; see the server log"))

    def _route(self, request: Request) -> tuple[str, dict]:
        adapter = ROUTES.bind_to_environ(request.environ)
        try:
            return adapter.match()
        except (NotFound, MethodNotAllowed):
            raise UnknownOperation(
                f"No Glacier operation matches {request.method} {request.path}"
            ) from None

    @staticmethod
    def _read_small_body(request: Request) -> bytes:
        length = request.content_length or 0
        if length > MAX_JSON_BODY:
            raise InvalidParameterValue(f"Request body too large: {length} bytes")
        return request.stream.read(length) if length else b""

    def _inject(self, kind: str, operation: str, request: Request, args: dict,
                streamed: bool) -> Response:
        log.info("fault injected: %s %s", operation, kind)
        if kind == "drop":
            if streamed:  # read half the body, then hang up on the client
                _read_exactly(request.stream, (request.content_length or 0) // 2)
            if operation == "GetJobOutput":  # send half the output, then hang up
                call = Call(request, args, b"")
                output = self.jobs.output(call.vault, args["job_id"], call.header("Range"))
                return Response(_dropping(output.body, _header(output.headers, "Content-Length")),
                                status=output.status, headers=output.headers,
                                direct_passthrough=True)
            request.environ["glacierfs.abort"]()  # no reply at all: a connection error
            return Response(_dropping(iter([]), 1), status=500, direct_passthrough=True)
        if streamed:
            _drain(request)
        if kind == "throttle":
            return error_response(Throttling("Rate exceeded"))
        if kind == "408":
            return error_response(RequestTimeout("Request timed out (injected fault)"))
        if kind == "404":
            what = next((args[key] for key in ("job_id", "upload_id", "archive_id", "vault")
                         if args.get(key)), "?")
            return error_response(ResourceNotFound(f"Not found: {what} (injected fault)"))
        return error_response(ServerFault(int(kind), "Service unavailable (injected fault)"))

    def _admin(self, request: Request) -> Response:
        """Test hooks on loopback: request counts, and faults switched at run time. Unsigned,
        so refused from any other address (a server listening on --host 0.0.0.0)."""
        if request.remote_addr not in ("127.0.0.1", "::1"):
            return error_response(AccessDenied("Test hooks answer on loopback only"))
        what = request.path[len(ADMIN_PREFIX):].strip("/")
        if what == "stats" and request.method == "GET":
            return json_response(200, self.faults.snapshot())
        if what == "stats" and request.method == "DELETE":
            self.faults.reset_counts()
            return Response(status=204)
        if what == "faults" and request.method == "PUT":
            from ..errors import UserError

            try:
                self.faults.set_spec(request.get_data(as_text=True))
            except UserError as error:
                return error_response(InvalidParameterValue(str(error)))
            return Response(status=204)
        return error_response(UnknownOperation(f"No admin call {request.method} {what}"))

    # ---- operations: vaults -------------------------------------------------------------

    def _location(self, call: Call, *tail: str) -> str:
        return "/".join([f"/{self.config.account_id}/vaults/{call.vault}", *tail])

    def op_CreateVault(self, call: Call) -> Response:
        self.store.create_vault(call.vault)
        return empty_response(201, {"Location": self._location(call)})

    def op_DescribeVault(self, call: Call) -> Response:
        return json_response(200, self.store.describe_vault(call.vault))

    def op_ListVaults(self, call: Call) -> Response:
        return json_response(200, self.store.list_vaults(call.query("marker"), call.query("limit")))

    def op_DeleteVault(self, call: Call) -> Response:
        self.store.delete_vault(call.vault)
        return empty_response(204)

    # ---- operations: archives -----------------------------------------------------------

    def op_UploadArchive(self, call: Call) -> Response:
        description = validation.description(call.header("x-amz-archive-description"))
        tree_hash = validation.tree_hash_header(call.header("x-amz-sha256-tree-hash"))
        content_sha = validation.tree_hash_header(
            call.header("x-amz-content-sha256"), "x-amz-content-sha256"
        )
        archive_id = self.store.upload_archive(
            call.vault, description, call.request.stream, call.content_length(), tree_hash,
            content_sha,
        )
        return empty_response(201, {
            "Location": self._location(call, "archives", archive_id),
            "x-amz-archive-id": archive_id,
            "x-amz-sha256-tree-hash": tree_hash,
        })

    def op_DeleteArchive(self, call: Call) -> Response:
        self.store.delete_archive(call.vault, call.args["archive_id"])
        return empty_response(204)

    # ---- operations: multipart uploads --------------------------------------------------

    def op_InitiateMultipartUpload(self, call: Call) -> Response:
        part_size = validation.part_size(call.header("x-amz-part-size"))
        raw = call.header("x-amz-archive-description")
        description = validation.description(raw.lstrip(" ")) if raw is not None else None
        upload_id = self.store.initiate_upload(call.vault, description, part_size)
        return empty_response(201, {
            "Location": self._location(call, "multipart-uploads", upload_id),
            "x-amz-multipart-upload-id": upload_id,
        })

    def op_UploadMultipartPart(self, call: Call) -> Response:
        tree_hash = validation.tree_hash_header(call.header("x-amz-sha256-tree-hash"))
        content_sha = validation.tree_hash_header(
            call.header("x-amz-content-sha256"), "x-amz-content-sha256"
        )
        computed = self.store.upload_part(
            call.vault, call.args["upload_id"], call.header("Content-Range"),
            call.request.stream, call.content_length(), tree_hash, content_sha,
        )
        return empty_response(204, {"x-amz-sha256-tree-hash": computed})

    def op_CompleteMultipartUpload(self, call: Call) -> Response:
        tree_hash = validation.tree_hash_header(call.header("x-amz-sha256-tree-hash"))
        archive_id, checksum = self.store.complete_upload(
            call.vault, call.args["upload_id"], call.header("x-amz-archive-size"), tree_hash
        )
        return empty_response(201, {
            "Location": self._location(call, "archives", archive_id),
            "x-amz-archive-id": archive_id,
            "x-amz-sha256-tree-hash": checksum,
        })

    def op_AbortMultipartUpload(self, call: Call) -> Response:
        self.store.abort_upload(call.vault, call.args["upload_id"])
        return empty_response(204)

    def op_ListMultipartUploads(self, call: Call) -> Response:
        return json_response(200, self.store.list_uploads(
            call.vault, call.query("marker"), call.query("limit")))

    def op_ListParts(self, call: Call) -> Response:
        return json_response(200, self.store.list_parts(
            call.vault, call.args["upload_id"], call.query("marker"), call.query("limit")))

    # ---- operations: jobs ---------------------------------------------------------------

    def op_InitiateJob(self, call: Call) -> Response:
        try:
            params = json.loads(call.body or b"{}")
        except ValueError:
            raise SerializationError("The job parameters are not valid JSON") from None
        job_id = self.jobs.initiate(call.vault, params)
        return empty_response(202, {
            "Location": self._location(call, "jobs", job_id),
            "x-amz-job-id": job_id,
        })

    def op_DescribeJob(self, call: Call) -> Response:
        return json_response(200, self.jobs.describe(call.vault, call.args["job_id"]))

    def op_ListJobs(self, call: Call) -> Response:
        return json_response(200, self.jobs.list(
            call.vault, call.query("marker"), call.query("limit"), call.query("statuscode"),
            call.query("completed")))

    def op_GetJobOutput(self, call: Call) -> Response:
        output = self.jobs.output(call.vault, call.args["job_id"], call.header("Range"))
        return Response(output.body, status=output.status, headers=output.headers,
                        direct_passthrough=True)


# ---- response helpers ----------------------------------------------------------------------


def json_response(status: int, body: dict) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def empty_response(status: int, headers: dict[str, str] | None = None) -> Response:
    response = Response(b"", status=status, headers=headers or {})
    response.headers.pop("Content-Type", None)
    return response


def error_response(error: GlacierError) -> Response:
    return Response(json.dumps(error.body()), status=error.status,
                    content_type="application/json")


def _raw_path(environ) -> str:
    uri = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if uri:
        return uri.split("?", 1)[0]
    from urllib.parse import quote

    return quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/~")


def _read_exactly(stream, count: int) -> None:
    while count > 0:
        chunk = stream.read(min(count, 1 << 20))
        if not chunk:
            return
        count -= len(chunk)


def _drain(request: Request) -> None:
    """Read and drop what is left of a body we refused, so the client sees our reply rather
    than a reset. (cheroot would drain it too, but in one read the size of the body.)"""
    _read_exactly(request.stream, request.content_length or 0)


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next(value for key, value in headers if key == name)


def _flipping(body: Iterable[bytes], position: int) -> Iterator[bytes]:
    """The same bytes, except that the one at `position` has every bit inverted."""
    seen = 0
    try:
        for chunk in body:
            if seen <= position < seen + len(chunk):
                flipped = bytearray(chunk)
                flipped[position - seen] ^= 0xFF
                chunk = bytes(flipped)
            seen += len(chunk)
            yield chunk
    finally:
        if hasattr(body, "close"):
            body.close()


def _dropping(body: Iterator[bytes], length: int | str) -> Iterator[bytes]:
    """Send about half of a response announced as `length` bytes, then fail the connection."""
    budget = max(int(length) // 2, 1)
    for chunk in body:
        if budget <= 0:
            break
        yield chunk[:budget]
        budget -= len(chunk)
    raise InjectedDrop("connection dropped by fault injection")
