"""No credential reaches the MLflow store or a framework-written artifact, whatever path it takes."""

from __future__ import annotations

import secrets as random_tokens
import string
from pathlib import Path

import pandas as pd
import pytest
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start

from bedrot_lab.lab import Lab
from bedrot_lab.sandbox.credentials import find_secrets
from bedrot_lab.secrets import MASK, Masker, scrub
from bedrot_lab.testing import read_run, run_experiment


def fake_credentials() -> dict[str, str]:
    """Fresh fake credentials, one of each shape, built here so none is ever written down."""
    upper = "".join(random_tokens.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    alnum = random_tokens.token_hex(20)
    return {
        "aws": "AKIA" + upper,
        "github": "ghp_" + alnum[:36],
        "meta": "EAA" + alnum + "Zz",
        "url_password": "pw" + random_tokens.token_hex(6),
        "by_name": "hunter-" + random_tokens.token_hex(5),
        "private_key_body": "MIIEp" + random_tokens.token_hex(16),
    }


LEAKY_PLUGIN = """
    import pandas as pd
    from bedrot_lab import Param, experiment, hookimpl

    FAKE = {fake!r}

    @experiment("leaky", params={{"api_key": Param(str, "none"), "comment": Param(str, "")}})
    def leaky(ctx):
        '''Leaks every way it can.'''
        ctx.set_tag("dsn", "postgresql://analyst:" + FAKE["url_password"] + "@db.example.com/lake")
        ctx.set_tag("bedrot.internal.masked", "overwritten by the experiment")
        ctx.set_tag("origin", "-----BEGIN RSA PRIVATE KEY-----\\n" + FAKE["private_key_body"])
        ctx.log_metric("seen." + FAKE["aws"], 1)
        ctx.report("The token was " + FAKE["meta"] + " and the key " + ctx.params["api_key"])
        ctx.log_table(pd.DataFrame({{"who": ["ana", FAKE["github"]], "n": [1, 2]}}), "people")
        ctx.log_table(pd.DataFrame({{"id": [FAKE["github"]]}}), "ids", mask=False)
        raise PermissionError("refused " + ctx.params["api_key"] + " and " + FAKE["github"])

    @hookimpl
    def register_experiments(register):
        register(leaky)

    @hookimpl
    def run_tags():
        return {{"origin_url": "https://bot:" + FAKE["url_password"] + "@git.example.com/x.git"}}
"""


def stored_bytes(lake: Path) -> list[tuple[Path, bytes]]:
    """Every file of the store: the SQLite database and the whole artifacts folder."""
    return [(path, path.read_bytes()) for path in sorted((lake / "mlruns").rglob("*")) if path.is_file()]


def leaks(fake: dict[str, str], texts: list[tuple[str, bytes]]) -> list[str]:
    return [f"{kind} in {where}" for kind, value in fake.items() for where, data in texts
            if value.encode() in data]


def test_no_credential_reaches_the_store_or_stdout(bedrot_lake, write_plugin, cli_env):
    fake = fake_credentials()
    write_plugin("leaky", LEAKY_PLUGIN.format(fake=fake))
    spec = bedrot_lake / "experiments" / "leaky.toml"
    spec.write_text(
        f'experiment = "leaky"\n'
        f'name = "leaky {fake["aws"]}"\n'
        f'purpose = "find {fake["meta"]}"\n'
        f'methodology = "log in with https://ana:{fake["url_password"]}@host.example.com/"\n'
        f'[params]\napi_key = "{fake["by_name"]}"\n'
        f'[sweep]\ncomment = ["{fake["aws"]}", "plain {fake["github"]}"]\n'
    )
    runs = [
        bedrot("run", str(spec), "--note", f"note {fake['github']}", "--json", env=cli_env),
        bedrot("run", str(spec), "--note", f"note {fake['github']}", env=cli_env),
        bedrot("run", "leaky", "-P", f"api_key={fake['by_name']}", "-P", f"comment={fake['aws']}",
               "--run-name", f"mine {fake['meta']}", "--json", env=cli_env),
    ]
    assert [r.returncode for r in runs] == [1, 1, 1], [r.stderr for r in runs]
    printed = [(f"output of run {n}", (r.stdout + r.stderr).encode()) for n, r in enumerate(runs)]
    store = [(str(path), data) for path, data in stored_bytes(bedrot_lake)]
    assert any(path.endswith("mlflow.db") for path, _ in store)
    assert any(path.endswith("report.md") for path, _ in store)
    assert any(path.endswith("traceback.txt") for path, _ in store)
    assert any("/sweep." in path for path, _ in store)
    # the table logged with mask=False keeps its ids, as documented: the only allowed copy
    allowed = [(p, d) for p, d in store if "tables/ids." not in p]
    assert leaks(fake, printed + allowed) == []
    assert any(fake["github"].encode() in d for p, d in store if "tables/ids." in p)


def test_what_was_masked_is_recorded_cumulatively(bedrot_lake, write_plugin):
    fake = fake_credentials()
    write_plugin("leaky", LEAKY_PLUGIN.format(fake=fake))
    lab = Lab.open(bedrot_lake)
    result = run_experiment(lab, "leaky", api_key=fake["by_name"], comment=f"see {fake['aws']}")
    assert result.status == "FAILED"
    assert fake["by_name"] not in result.error and fake["github"] not in result.error
    assert result.params["api_key"] == MASK and result.params["comment"] == f"see {MASK}"
    tags = read_run(result.run_id, lab).data.tags
    masked = tags["bedrot.internal.masked"]
    for note in ("param api_key (name)", "param comment (AWS access key)", "tag dsn (URL with password)",
                 "tag origin (private key)", "tag origin_url (URL with password)", "error (name)"):
        assert note in masked, (note, masked)
    assert "overwritten" not in masked
    assert tags["dsn"] == f"postgresql://analyst:{MASK}@db.example.com/lake"
    assert tags["error"] == f"PermissionError: refused {MASK} and {MASK}"
    metrics = read_run(result.run_id, lab).data.metrics
    assert "seen.masked" in metrics


@pytest.mark.parametrize("text", [
    "postgresql://user:pa55word@db.internal:5432/lake",
    "https://deploy:abc123xyz@github.com/org/repo.git",
    "AKIA" + "ABCDEFGHIJKLMNOP",
    "token = " + "EAA" + "x" * 40,
    "api_key: 'q9w8e7r6t5y4u3'",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
])
def test_one_detector_for_the_sandbox_and_the_run(text):
    """What the sandbox's secrets rule reports in a file, a run masks, and the other way round."""
    assert find_secrets(text + "\n", "notes.txt"), text
    masked, kinds = scrub(text)
    assert kinds and MASK in masked, text


def test_masking_keeps_what_is_not_a_credential():
    masker = Masker()
    assert masker.text("see https://example.com/a:b@c and 3 rows") == "see https://example.com/a:b@c and 3 rows"
    assert masker.text("https://ana:s3cr3tpass@host/db") == f"https://ana:{MASK}@host/db"
    assert masker.notes == ["URL with password"]
    masker = Masker()
    frame = pd.DataFrame({"token_count": [1, 2], "api_key": ["a1", "b2"], "who": ["ana", "AKIA" + "Q" * 16]})
    clean = masker.frame(frame)
    assert clean["token_count"].tolist() == [1, 2]
    assert clean["api_key"].tolist() == [MASK, MASK]
    assert clean["who"].tolist() == ["ana", MASK]
    assert masker.notes == ["table column api_key (name)", "table cell who (AWS access key)"]


def test_a_value_masked_by_name_is_masked_wherever_it_reappears():
    masker = Masker()
    clean = masker.mapping({"db_password": "correct-horse", "rows": "3"}, "param")
    assert clean == {"db_password": MASK, "rows": "3"}
    assert masker.text("login failed for correct-horse", "error") == f"login failed for {MASK}"
    assert masker.data({"argv": ["--pw", "correct-horse"], 3: 4.5}) == {"argv": ["--pw", MASK], 3: 4.5}


def test_a_tracking_uri_is_printed_without_its_password(tmp_path):
    from bedrot_lab.config import settings_from

    password = "pw" + random_tokens.token_hex(6)
    settings = settings_from(tmp_path, {}, None, env={"MLFLOW_TRACKING_URI": f"postgresql://ana:{password}@db/lab"})
    assert settings.tracking_uri_shown == f"postgresql://ana:{MASK}@db/lab"


def test_a_large_table_is_masked_cell_by_cell_at_its_edges():
    keys = ["AKIA" + letter * 16 for letter in "QRS"]
    ids = [f"US{i:010d}" for i in range(10_000)]
    ids[0], ids[5_000], ids[-1] = keys
    frame = pd.DataFrame({"isrc": pd.Series(ids, dtype="string"), "n": range(10_000)})
    clean = Masker().frame(frame)
    assert clean["isrc"].iloc[[0, 5_000, -1]].tolist() == [MASK] * 3
    assert (clean["isrc"] != frame["isrc"]).sum() == 3


def test_the_environments_credentials_are_masked_but_not_the_working_folder(tmp_path: Path) -> None:
    from bedrot_lab.secrets import environment_credentials

    password = "pw-" + random_tokens.token_hex(8)
    env = {"MLFLOW_TRACKING_PASSWORD": password, "DB_PASSWORD": password + "x", "PWD": str(tmp_path),
           "OLDPWD": str(tmp_path.parent), "HOME": str(tmp_path)}
    assert environment_credentials(env) == {password, password + "x"}
