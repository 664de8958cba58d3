"""Errors the local vault service sends, in the service's wire format (glacier-api.md §4).

botocore picks the exception class from the JSON `code` alone, so the code strings here are the
contract; statuses follow the botocore model where it has one and the Developer Guide otherwise.
"""

from __future__ import annotations


class GlacierError(Exception):
    """An error response: HTTP status, error code, message, and who is at fault."""

    status = 400
    code = "InvalidParameterValueException"
    fault = "Client"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "type": self.fault}


def _error(name: str, status: int, fault: str = "Client") -> type[GlacierError]:
    return type(name, (GlacierError,), {"status": status, "code": name, "fault": fault})


ResourceNotFound = _error("ResourceNotFoundException", 404)
InvalidParameterValue = _error("InvalidParameterValueException", 400)
MissingParameterValue = _error("MissingParameterValueException", 400)
RequestTimeout = _error("RequestTimeoutException", 408)
Throttling = _error("ThrottlingException", 400)
AccessDenied = _error("AccessDeniedException", 403)
InvalidSignature = _error("InvalidSignatureException", 403)
MissingAuthenticationToken = _error("MissingAuthenticationTokenException", 400)
UnrecognizedClient = _error("UnrecognizedClientException", 400)
SerializationError = _error("SerializationException", 400)
UnknownOperation = _error("UnknownOperationException", 404)
LimitExceeded = _error("LimitExceededException", 400)


class ServerFault(GlacierError):
    """An injected 5xx with a chosen status (500 or 503): not a modeled Glacier error code."""

    fault = "Server"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = "ServiceUnavailableException" if status == 500 else "ServiceUnavailable"


def vault_not_found(arn: str) -> GlacierError:
    return ResourceNotFound(f"Vault not found for ARN: {arn}")
IncompleteSignature = _error("IncompleteSignatureException", 400)
