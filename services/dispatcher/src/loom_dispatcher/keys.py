"""``/api/keys``: create, list and revoke the API keys stored in the ``LOOM_API_KEYS`` bucket
(admin scope). Every service re-reads the bucket (``loom_protocol.auth``); this one also applies
its own changes at once."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import JSONResponse, Response
from loom_protocol import ApiKeyList, ApiKeyRecord, CreatedApiKey, ErrorBody, NewApiKey
from loom_protocol.auth import key_hash, new_api_key, parse_stored_keys

from .state import StateDep

router = APIRouter(tags=["keys"])
_TIMEOUT_S = 5.0  # each bucket operation
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (401, 403, 404, 422, 503)}


@router.post("/api/keys", status_code=201, response_model=CreatedApiKey, responses=_ERRORS)
async def create_key(body: NewApiKey, state: StateDep) -> JSONResponse:
    """A new key with a name and scopes. The answer holds the key itself: it is shown this once
    (only its SHA-256 is stored)."""
    bucket = await state.key_bucket()
    key = new_api_key()
    record = ApiKeyRecord.of(key, body.name, body.scopes)
    digest = key_hash(key)
    await asyncio.wait_for(bucket.create(digest, record.to_json()), _TIMEOUT_S)
    state.keys.put(digest, record)
    return JSONResponse(CreatedApiKey(key=key, record=record).to_wire(), 201)


@router.get("/api/keys", response_model=ApiKeyList, responses=_ERRORS)
async def list_keys(state: StateDep) -> ApiKeyList:
    """The stored keys (never the keys themselves); the fixed ``LOOM_API_KEYS`` are not listed."""
    stored = parse_stored_keys(await asyncio.wait_for(state.stored_keys(), _TIMEOUT_S))
    return ApiKeyList(keys=sorted(stored.values(), key=lambda r: (r.name, r.id)))


@router.delete("/api/keys/{key_id}", status_code=204, responses=_ERRORS)
async def revoke_key(
    state: StateDep,
    key_id: str = Path(pattern=r"^[0-9a-f]{16}$", description="the key's id, as listed"),
) -> Response:
    """Revoke a stored key: refused here at once, by every service within its refresh interval."""
    stored = parse_stored_keys(await asyncio.wait_for(state.stored_keys(), _TIMEOUT_S))
    bucket = await state.key_bucket()
    digests = [digest for digest, record in stored.items() if record.id == key_id]
    if not digests:
        raise HTTPException(404, f"no stored API key with id {key_id!r}")
    for digest in digests:
        await asyncio.wait_for(bucket.purge(digest), _TIMEOUT_S)
        state.keys.remove(digest)
    return Response(status_code=204)
