"""The routes field mode needs, on the real ingress app in-process: the served model's files with their hashes, and
the page served cross-origin isolated (COOP/COEP) so ONNX Runtime Web may run WASM threads."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.serve_fixtures import ingress_client, make_model_dir

ISOLATION = {"cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("field-routes"))


def isolated(response) -> bool:
    return all(response.headers.get(k) == v for k, v in ISOLATION.items())


def test_the_page_and_its_files_are_cross_origin_isolated_and_the_api_is_not(model_dir, tmp_path):
    with ingress_client(model_dir, tmp_path / "queue") as c:
        for path in ("/", "/sw.js", "/static/field.js", "/static/outbox.js", "/field/model.json", "/field/model/int8"):
            r = c.get(path)
            assert r.status_code == 200 and isolated(r), (path, r.status_code, dict(r.headers))
        for path in ("/healthz", "/model", "/openapi.json"):
            assert not any(k in c.get(path).headers for k in ISOLATION), path
    with ingress_client(model_dir, tmp_path / "queue", "serve.field.cross_origin_isolated=false") as c:
        assert c.get("/").status_code == 200 and not any(k in c.get("/").headers for k in ISOLATION)


def test_model_files_carry_their_hashes_and_a_changed_file_is_not_served(model_dir, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(model_dir, served)
    meta = json.loads((served / "model.json").read_text())
    with ingress_client(served, tmp_path / "queue") as c:
        r = c.get("/field/model.json")
        assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
        assert r.headers["x-mycolens-variant"] == "int8" and int(r.headers["x-mycolens-max-pixels"]) > 0
        assert r.headers["x-mycolens-wasm-threads"] == "1"  # serve.field.wasm_threads
        assert c.get("/field/model.json", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
        f = c.get("/field/model/fp32")
        assert f.status_code == 200 and hashlib.sha256(f.content).hexdigest() == meta["files"]["fp32"]["sha256"]
        assert c.get("/field/model/fp16").json()["error"]["code"] == "not_found"
        (served / meta["files"]["fp32"]["path"]).write_bytes(f.content[:-1] + bytes([f.content[-1] ^ 1]))
        bad = c.get("/field/model/fp32")
        assert bad.status_code == 503 and bad.json()["error"]["code"] == "model_unavailable"
