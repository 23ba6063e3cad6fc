"""crysvcd evaluate into a real PostgreSQL server, with resume.

The server comes from the environment: CRYSVCD_TEST_POSTGRES is a URL of a role that may
create databases (``.ci/run`` installs Debian's postgresql, starts it and sets the URL).
Without it the test is skipped on a developer's machine and fails in CI (CI=1).
"""

import os
import uuid

import pytest
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd.evaluate.runner import evaluate
from crysvcd.evaluate.settings import EvaluateConfig, PhononSettings
from crysvcd.evaluate.store import ResultStore


@pytest.fixture
def pg_url():
    url = os.environ.get("CRYSVCD_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide a PostgreSQL server in CRYSVCD_TEST_POSTGRES")
        pytest.skip("no PostgreSQL server (set CRYSVCD_TEST_POSTGRES)")
    import psycopg2

    base, _, _ = url.rpartition("/")
    name = f"crysvcd_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    yield f"{base}/{name}"
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def test_evaluate_into_postgresql_and_resume(pg_url, tmp_path, dask_client):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name, atoms in (("a_cu", bulk("Cu", "fcc", a=3.7)), ("b_al", bulk("Al", "fcc", a=4.0))):
        AseAtomsAdaptor.get_structure(atoms).to(filename=str(folder / f"{name}.cif"))
    cfg = EvaluateConfig(mlip="emt", fmax=0.05, relax_steps=100)
    table = evaluate(folder, cfg, db=pg_url, progress=False, client=dask_client)
    assert set(table["key"]) == {"a_cu", "b_al"} and (table["status"] == "ok").all()
    first = {k: r.id for k, r in ResultStore(pg_url).rows().items()}
    # the same command again computes nothing; adding phonons computes only those
    evaluate(folder, cfg, db=pg_url, progress=False, client=dask_client)
    assert {k: r.id for k, r in ResultStore(pg_url).rows().items()} == first
    cfg.phonons = True
    cfg.phonon = PhononSettings(supercell_min_length=6.0, mesh=(3, 3, 3))
    table = evaluate(folder, cfg, db=pg_url, progress=False, client=dask_client).set_index("key")
    assert table["phonon_stable"].astype(bool).all()
    rows = ResultStore(pg_url).rows()
    assert {k: r.id for k, r in rows.items()} == first  # labels added to the same rows
    assert all(r.get("relax_settings") == cfg.signature("relax") for r in rows.values())
