"""source_digest names the code that ran even without trustworthy git metadata: the digest of a checked-out
tree equals the digest git computes for its commit, any change to a source file changes it, files outside the
source set do not, and commits_with_digest finds the commit back."""

import subprocess

import pytest

from mxfp4lab import provenance as pv


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@t")
    _git(tmp_path, "config", "user.name", "t")
    files = {"mxfp4lab/a.py": "x = 1\n", "mxfp4lab/kernels/csrc/k.cu": "// k\n", "scripts/gpu/s.steps": "a b\n",
             "notebooks/n.ipynb": "{}\n", "docs/d.md": "doc\n", "mxfp4lab/data.bin": "\0"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "one")
    return tmp_path


def test_the_digest_on_disk_is_the_commits(repo):
    d = pv.source_digest(repo)
    assert pv.tree_digest("HEAD", repo) == d and len(d) == 16
    (repo / "docs/d.md").write_text("other doc\n")  # not source
    (repo / "mxfp4lab/__pycache__").mkdir()
    (repo / "mxfp4lab/__pycache__/a.cpython-312.pyc").write_bytes(b"\1")
    (repo / "mxfp4lab/data.bin").write_text("\1")  # not a source suffix
    assert pv.source_digest(repo) == d


def test_any_source_change_changes_it_and_the_commit_is_found(repo):
    d1 = pv.source_digest(repo)
    (repo / "mxfp4lab/kernels/csrc/k.cu").write_text("// k, changed\n")
    d2 = pv.source_digest(repo)
    assert d2 != d1
    (repo / "scripts/new.py").write_text("")  # an untracked source file counts too
    d3 = pv.source_digest(repo)
    assert d3 not in (d1, d2)
    first = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "two")
    second = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert pv.commits_with_digest(d1, root=repo) == [first]
    assert pv.commits_with_digest(d3, root=repo) == [second]
    assert pv.commits_with_digest(d2, root=repo) == []


def test_the_provenance_block_carries_it():
    assert pv.provenance("x")["source_digest"] == pv.process_source_digest() == pv.source_digest()
