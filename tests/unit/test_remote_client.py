"""The remote client's reading of a service's answers, without a service: Retry-After in any case, the rows a
refusal sends, the rows a request may carry, and the outputs MLflow's protocol can give."""

import pytest
from requests.structures import CaseInsensitiveDict

from gavel.targets.access import wire
from gavel.targets.access.policy import Output
from gavel.targets.access.remote import ROW_WITHHELD, Endpoint, RemoteError, RemoteResponder, _retry_after
from gavel.targets.judges.remote import RemoteJudge, rows_per_request

ENDPOINT = Endpoint("http://127.0.0.1:9", "v2", "judge")


def test_retry_after_is_read_whatever_the_case_of_the_header_and_from_the_body_without_one():
    assert _retry_after(CaseInsensitiveDict({"retry-after": "42"}), None, ENDPOINT) == 42.0
    assert _retry_after(CaseInsensitiveDict({"Retry-After": "7"}), None, ENDPOINT) == 7.0
    assert _retry_after(CaseInsensitiveDict(), {"retry_after": 3}, ENDPOINT) == 3.0
    with pytest.raises(RemoteError, match="Retry-After"):
        _retry_after(CaseInsensitiveDict({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}), None, ENDPOINT)


def test_rows_a_whole_refusal_calls_answered_were_charged_and_withheld():
    rows = RemoteResponder._refused_rows({"rows": [0, 0, 1, 3]}, 4, 403)
    assert rows.tolist() == [ROW_WITHHELD, ROW_WITHHELD, wire.ROW_REJECTED, wire.ROW_REFUSED]
    assert RemoteResponder._refused_rows({"rows": [0, 9]}, 2, 403).tolist() == [wire.ROW_BANNED] * 2  # not ours
    assert RemoteResponder._refused_rows(None, 3, 429).tolist() == [wire.ROW_REFUSED] * 3


def test_a_request_carries_what_the_service_takes_in_rows_and_in_bytes():
    assert rows_per_request({"max_rows": 1024, "max_bytes": 32 * 2**20}, (1, 8, 8)) == 1024
    assert rows_per_request({"max_rows": 1024, "max_bytes": 32 * 2**20}, (3, 32, 32)) == 455
    assert rows_per_request({}, (1, 8, 8)) == 256


def test_mlflows_protocol_is_refused_an_output_it_cannot_ask_for():
    judge = RemoteJudge(url="http://127.0.0.1:9", protocol="mlflow")
    judge._shows = "logits"
    assert "cannot ask" in judge.check_output(Output.PROBABILITIES)
    assert judge.check_output(Output.LABEL) is None and judge.check_output(Output.LOGITS) is None
    judge._shows = "label"
    assert "at most label" in judge.check_output(Output.PROBABILITIES)
    v2 = RemoteJudge(url="http://127.0.0.1:9")
    v2._shows = "logits"
    assert v2.check_output(Output.PROBABILITIES) is None


@pytest.mark.parametrize("data", [["0.5"] * 4, [True, 0.1, 0.2, 0.3], [None] * 4, [0.1, 0.2, [0.3], 0.4]])
def test_a_request_of_anything_but_numbers_is_a_422(data):
    body = {"inputs": [{"name": "input", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": data}]}
    with pytest.raises(wire.WireError, match="numbers only") as refused:
        wire.decode_v2_request(body, (1, 2, 2))
    assert refused.value.status == 422
    good = {"inputs": [{"name": "input", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": [0, 0.5, 1, 0.25]}]}
    assert wire.decode_v2_request(good, (1, 2, 2)).x.dtype.name == "float32"
