"""The security store: hashed tokens, scopes, subtrees, expiry, revocation, the audit log."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shopfloor.api import AuthError, AuthStore, Scope, covers, default_auth_path


def test_scopes_are_ordered() -> None:
    assert Scope.admin.includes(Scope.operate)
    assert Scope.admin.includes(Scope.read)
    assert Scope.operate.includes(Scope.read)
    assert not Scope.operate.includes(Scope.admin)
    assert not Scope.read.includes(Scope.operate)


def test_subtrees_match_whole_segments() -> None:
    trees = ["acme/munich"]
    assert covers(trees, "acme/munich")
    assert covers(trees, "acme/munich/body-shop/line-1/temperature")
    assert not covers(trees, "acme/munich-2")
    assert not covers(trees, "acme/leipzig/paint")
    assert not covers(trees, "acme")
    assert covers(["acme"], "acme/leipzig")


def test_default_auth_path_sits_beside_the_historian(tmp_path: Path) -> None:
    assert default_auth_path(f"duckdb:{tmp_path}/h.duckdb") == tmp_path / "h.auth.sqlite"
    assert default_auth_path(f"duckdb://{tmp_path}/x.duckdb") == tmp_path / "x.auth.sqlite"
    assert default_auth_path(f"{tmp_path}/p.duckdb") == tmp_path / "p.auth.sqlite"
    for url in ("duckdb::memory:", "duckdb://:memory:", "postgresql://u@localhost/test"):
        with pytest.raises(AuthError, match="--auth-db"):
            default_auth_path(url)


async def test_only_a_hash_is_stored_and_tokens_verify(tmp_path: Path) -> None:
    path = tmp_path / "auth.sqlite"
    async with AuthStore(path) as store:
        new = await store.create_token("operate", ["acme/munich/", " acme/leipzig"], name="line")
        assert new.token.startswith(f"sf_{new.info.id}_")
        assert new.info.subtrees == ("acme/munich", "acme/leipzig")
        claimed, info = await store.authenticate(new.token)
        assert claimed == new.info.id
        assert info is not None
        assert info.scope is Scope.operate
        assert info.state() == "active"
        # the same id with another secret, a malformed token, nothing: all rejected
        forged = f"sf_{new.info.id}_{'A' * 43}"
        assert await store.authenticate(forged) == (new.info.id, None)
        assert await store.authenticate("sf_nothex_xxxxxxxxxxxxxxxxxxxxxxxxx") == (None, None)
        assert await store.authenticate("") == (None, None)
    assert path.stat().st_mode & 0o077 == 0, "the store is readable by its owner only"
    raw = b"".join(p.read_bytes() for p in sorted(tmp_path.iterdir()))  # noqa: ASYNC240
    assert new.token.encode() not in raw
    secret = new.token.split("_", 2)[2]  # the secret itself may hold "_"
    assert secret.encode() not in raw
    with sqlite3.connect(path) as con:
        (stored,) = con.execute("SELECT hash FROM tokens WHERE id = ?", [new.info.id]).fetchone()
    assert stored == hashlib.sha256(new.token.encode()).hexdigest()


async def test_bad_tokens_are_refused_with_a_reason(tmp_path: Path) -> None:
    async with AuthStore(tmp_path / "a.sqlite") as store:
        with pytest.raises(AuthError, match="unknown scope 'root'"):
            await store.create_token("root", ["acme"])
        with pytest.raises(AuthError, match="at least one subtree"):
            await store.create_token("read", [])
        with pytest.raises(AuthError, match="not an asset path"):
            await store.create_token("read", ["acme//x y"])
        with pytest.raises(AuthError, match="in the past"):
            await store.create_token("read", ["acme"], expires_at=datetime(2000, 1, 1, tzinfo=UTC))
        with pytest.raises(AuthError, match="in the future"):
            await store.create_token("read", ["acme"], expires_in=timedelta(0))
        with pytest.raises(AuthError, match="no token 'nope'"):
            await store.revoke_token("nope")


async def test_expiry_and_revocation(tmp_path: Path) -> None:
    async with AuthStore(tmp_path / "a.sqlite") as store:
        soon = await store.create_token("read", ["acme"], expires_in=timedelta(hours=1))
        assert soon.info.expires_at is not None
        assert soon.info.state() == "active"
        assert soon.info.state(soon.info.expires_at) == "expired"
        gone = await store.create_token("read", ["acme"])
        revoked = await store.revoke_token(gone.info.id)
        assert revoked.state() == "revoked"
        _, info = await store.authenticate(gone.token)
        assert info is not None
        assert info.state() == "revoked"
        with pytest.raises(AuthError, match="already revoked"):
            await store.revoke_token(gone.info.id)
        listed = {t.id: t for t in await store.tokens()}
        assert listed[gone.info.id].revoked_at is not None
        assert listed[soon.info.id].revoked_at is None


async def test_the_audit_log_is_append_only_and_chained(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    async with AuthStore(path) as store:
        new = await store.create_token("read", ["acme"])
        await store.audit(new.info.id, "GET", "/api/v1/assets", 200, client="10.0.0.1")
        await store.audit(new.info.id, "POST", "/api/v1/setpoints/x", 422, detail={"value": 5})
        entries = await store.audit_entries(limit=10)
        assert [e.method for e in entries] == ["POST", "GET", "CLI"]
        assert entries[0].detail == {"value": 5}
        assert entries[1].client == "10.0.0.1"
        assert await store.verify_audit() == 3
        tokens = {t.id: t for t in await store.tokens()}
        assert tokens[new.info.id].last_used_at == entries[0].ts
    with sqlite3.connect(path) as con:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute("UPDATE audit SET status = 200 WHERE method = 'POST'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute("DELETE FROM audit")
        with pytest.raises(sqlite3.IntegrityError, match="only be revoked"):
            con.execute("UPDATE tokens SET scope = 'admin'")
        with pytest.raises(sqlite3.IntegrityError, match="revoked, not deleted"):
            con.execute("DELETE FROM tokens")
        # Someone with the file drops the trigger and edits a row: the chain shows it.
        con.execute("DROP TRIGGER audit_no_update")
        con.execute("UPDATE audit SET status = 200 WHERE method = 'POST'")
    async with AuthStore(path) as store:
        with pytest.raises(AuthError, match="row 3 was changed"):
            await store.verify_audit()
    with sqlite3.connect(path) as con:
        con.execute("DROP TRIGGER audit_no_delete")
        con.execute("DELETE FROM audit WHERE seq = 2")
    async with AuthStore(path) as store:
        with pytest.raises(AuthError, match="chain breaks at row 3"):
            await store.verify_audit()


async def test_a_second_process_sees_revocation_at_once(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    async with AuthStore(path) as server, AuthStore(path) as cli:
        new = await cli.create_token("read", ["acme"])
        assert (await server.authenticate(new.token))[1] is not None
        await cli.revoke_token(new.info.id)
        _, info = await server.authenticate(new.token)
        assert info is not None
        assert info.state() == "revoked"
