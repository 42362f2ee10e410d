"""planlock serve: the token file, the OpenAPI schema, the command line."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_server_support import TOKENS, TOKENS_TOML, auth, free_port, make_app

from planlock import ToolRegistry, UsageError
from planlock.server._app import ServerConfig, openapi_document
from planlock.server._auth import TokenStore, hash_token

ROOT = Path(__file__).resolve().parents[1]


# -- token files --------------------------------------------------------------------------------


def test_a_token_file_maps_hashed_or_clear_tokens_to_roles(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(
        TOKENS_TOML
        + f'[users.hashed]\nroles = ["admin"]\ntoken_sha256 = "{hash_token("h-secret-1")}"\n'
    )
    store = TokenStore.load(path)
    assert len(store) == len(TOKENS) + 1
    hashed = store.identify("h-secret-1")
    assert hashed is not None
    assert (hashed.name, set(hashed.roles)) == ("hashed", {"admin"})
    alice = store.identify("alice-token-01")
    assert alice is not None
    assert alice.name == "alice"
    assert store.identify("alice-token-0") is None
    js = tmp_path / "tokens.json"
    js.write_text(json.dumps({"users": {"a": {"roles": ["approver"], "token": "abcdefgh1"}}}))
    assert TokenStore.load(js).identify("abcdefgh1") is not None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected a [users.NAME] table"),
        ('[users.a]\nroles = ["boss"]\ntoken = "12345678"\n', "roles must be a list"),
        ("[users.a]\nroles = []\n", "exactly one of token or token_sha256"),
        ('[users.a]\nroles = []\ntoken = "short"\n', "at least 8 characters"),
        ('[users.a]\nroles = []\ntoken_sha256 = "xyz"\n', "64 hex digits"),
        ('[users.a]\nroles = []\ntoken = "12345678"\npassword = 1\n', "unknown key(s) password"),
        (
            (
                '[users.a]\nroles = []\ntoken = "12345678"\n'
                '[users.b]\nroles = []\ntoken = "12345678"\n'
            ),
            "the same token as users.a",
        ),
        ("[users\n", "not valid"),
    ],
)
def test_a_bad_token_file_is_a_clear_usage_error(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(problem)):
        TokenStore.load(path)


# -- the OpenAPI schema ------------------------------------------------------------------------


def schema_now(tmp_path: Path, registry: ToolRegistry) -> str:
    """The schema of a fully configured app (not the engine-less one the script uses)."""
    app, _ = make_app(tmp_path / "o.db", registry)
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def test_the_committed_openapi_schema_matches_the_code(
    tmp_path: Path, registry: ToolRegistry
) -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == openapi_document(), "run: python scripts/openapi.py"
    assert committed == schema_now(tmp_path, registry)


def test_every_operation_has_typed_bodies_and_declares_its_roles(
    tmp_path: Path, registry: ToolRegistry
) -> None:
    schema = json.loads(schema_now(tmp_path, registry))
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            assert op["x-roles"], (method, path)
            assert op["security"] == [{"HTTPBearer": []}], (method, path)
            ok = op["responses"][next(c for c in op["responses"] if c.startswith("2"))]
            content = ok.get("content", {})
            if "text/event-stream" not in content:
                assert "$ref" in json.dumps(content["application/json"]["schema"]), (method, path)
            for code in ("401", "403"):
                assert op["responses"][code]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorOut"
                }
            if "requestBody" in op:
                body = op["requestBody"]["content"]["application/json"]["schema"]
                assert "$ref" in body, (method, path)


def test_me_names_the_caller_and_roles(tmp_path: Path, registry: ToolRegistry) -> None:
    app, _ = make_app(tmp_path / "e.db", registry, ServerConfig(workers=0))
    with TestClient(app) as c:
        assert c.get("/api/me", headers=auth("pat")).json() == {
            "name": "pat",
            "roles": ["approver", "submitter"],
        }


def test_serve_refuses_a_bad_token_file_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from planlock.cli import app

    bad = tmp_path / "tokens.toml"
    bad.write_text('[users.a]\nroles = ["root"]\ntoken = "12345678"\n')
    for tokens, problem in ((tmp_path / "none.toml", "cannot read"), (bad, "roles must be")):
        args = ["serve", "--tools", "planlock.demo:registry", "--tokens", str(tokens)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2
        assert problem in result.output


def test_serve_takes_its_limits_from_options_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from planlock.cli import _serve, app

    started: list[Any] = []
    monkeypatch.setattr(_serve, "run_server", lambda api, **_kw: started.append(api))
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS_TOML)
    args = ["serve", "--tools", "planlock.demo:registry", "--tokens", str(tokens)]
    args += ["--journal", str(tmp_path / "j.db"), "--max-body-bytes", "2048", "--max-steps", "7"]
    args += ["--port", "0"]
    env = {"PLANLOCK_MAX_GOAL_CHARS": "99", "PLANLOCK_AUTH_FAILURES": "3"}
    result = CliRunner().invoke(app, [*args, "--anonymous-window", "5"], env=env)
    assert result.exit_code == 0, result.output
    config = started[0].state.config
    assert (config.max_body_bytes, config.max_steps, config.max_goal_chars) == (2048, 7, 99)
    assert (config.auth_failures, config.anonymous_window) == (3, 5.0)
    assert (config.max_input_chars, config.auth_window) == (32768, 60.0)  # the defaults
    result = CliRunner().invoke(app, [*args, "--max-steps", "0"])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    "bad", [{"max_steps": 0}, {"max_body_bytes": -1}, {"auth_window": 0}, {"auth_failures": -1}]
)
def test_a_limit_that_makes_no_sense_is_a_usage_error(bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        ServerConfig(**bad)


def test_serve_names_its_workers_after_its_port_or_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker N is ``HOST:ADDRESS:PORT:http-N`` (``--id``: ``ID:http-N``), the same at every
    start: a restarted server takes its own runs back at once (tests/test_serve_crash.py)."""
    from typer.testing import CliRunner

    from planlock.cli import _serve, app

    started: list[Any] = []
    monkeypatch.setattr(_serve, "run_server", lambda api, **kw: started.append((api, kw)))
    (tmp_path / "tokens.toml").write_text(TOKENS_TOML)
    args = ["serve", "--tools", "planlock.demo:registry", "--tokens", str(tmp_path / "tokens.toml")]
    args += ["--journal", str(tmp_path / "j.db")]
    port = free_port()
    default = f"{socket.gethostname()}:127.0.0.1:{port}"
    for extra, prefix in (([], default), (["--id", "blue"], "blue")):
        result = CliRunner().invoke(app, [*args, "--port", str(port), *extra])
        assert result.exit_code == 0, result.output
        api, kw = started.pop()
        assert api.state.engine.worker_id(1) == f"{prefix}:http-1"
        assert "fd" in kw  # uvicorn serves the socket bound before
        assert "port" not in kw


def test_a_second_serve_on_a_port_in_use_exits_before_its_workers_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its default id is the live one's (``HOST:ADDRESS:PORT``): had its workers started, they would
    have taken the live server's runs as their own."""
    from typer.testing import CliRunner

    from planlock.cli import _serve, app

    started: list[Any] = []
    monkeypatch.setattr(_serve, "run_server", lambda api, **_kw: started.append(api))
    (tmp_path / "tokens.toml").write_text(TOKENS_TOML)
    with socket.socket() as live:
        live.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        live.bind(("127.0.0.1", 0))
        live.listen()
        port = live.getsockname()[1]
        args = ["serve", "--tools", "planlock.demo:registry", "--tokens"]
        args += [str(tmp_path / "tokens.toml"), "--journal", str(tmp_path / "j.db")]
        result = CliRunner().invoke(app, [*args, "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in " ".join(result.output.split())
    assert started == []  # no app, so no worker
