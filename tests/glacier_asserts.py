"""Assertions shared by the service tests."""

from __future__ import annotations


def service_error(excinfo, code: str = "InvalidParameterValueException",
                  status: int = 400) -> dict:
    """The §4 wire format: modeled code, status, x-amzn-RequestId, code/message/type in the
    body. Returns the parsed error response."""
    response = excinfo.value.response
    assert response["Error"]["Code"] == code
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert response["ResponseMetadata"].get("RequestId")
    assert response.get("code") == code
    assert response.get("type") == "Client"
    assert response.get("message") == response["Error"]["Message"]
    assert response["Error"]["Message"]
    return response


def rejected(excinfo, code: str = "InvalidParameterValueException", status: int = 400) -> str:
    """service_error(), returning the message."""
    return service_error(excinfo, code, status)["Error"]["Message"]
