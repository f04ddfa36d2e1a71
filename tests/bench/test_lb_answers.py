"""Which pod an answer names: serve-hostname's plain body, kmesh/echo's HTTP JSON."""

from kmesh.bench.lb import _named


def test_answers_name_their_pod() -> None:
    assert _named("web-abc") == "web-abc"
    assert _named('{"pod": "web-1", "namespace": "default", "node": "n1"}') == "web-1"
    assert _named('{"not": "a pod"}') == '{"not": "a pod"}'
    assert _named("{broken json") == "{broken json"
