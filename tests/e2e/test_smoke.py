"""The request path end to end: 401 without a token, 200 with one, identity forwarded."""

from tests.support import claims, sign


def test_no_token_gets_challenge_and_upstream_sees_nothing(stack):
    response = stack.client.get("/mcp/tools")
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer resource_metadata=")
    assert "error=" not in challenge
    assert stack.upstream.requests == []


def test_valid_token_is_forwarded_without_authorization(stack):
    token = sign(stack.key, claims())
    response = stack.client.get("/mcp/tools?x=1", headers={"authorization": f"Bearer {token}",
                                                          "x-enforcer-sub": "mallory"})
    assert response.status_code == 200, response.text
    seen = stack.upstream.requests[-1]
    assert seen.path == "/mcp/tools" and seen.query == "x=1"
    assert seen.header("authorization") is None
    assert seen.header("x-enforcer-sub") == "alice"
    assert seen.header("x-enforcer-client-id") == "agent-42"
