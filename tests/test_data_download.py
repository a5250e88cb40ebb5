"""Downloader: loopback HTTP and file:// sources, checksums, atomic rename, Range resume."""

import hashlib
import os
import zipfile

import pytest
from data_fixtures import real_data_dir, serve, with_md5s_of, write_mnist, write_wikitext

from enn.data import (
    DataIntegrityError,
    DataMissingError,
    download,
    downloader,
    get_datamodule,
    sources,
)
from enn.data.sources import MNIST_FILES, Source

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    (root / "blob.bin").write_bytes(PAYLOAD)
    return root


def test_good_download_is_verified_then_renamed(served, tmp_path, monkeypatch):
    dest = tmp_path / "out" / "blob.bin"
    seen = []
    real_md5 = downloader.md5_file

    def spy(path, **kwargs):
        seen.append((path.name, dest.exists()))
        return real_md5(path, **kwargs)

    monkeypatch.setattr(downloader, "md5_file", spy)
    with serve(served) as (url, _):
        assert downloader.fetch([url + "blob.bin"], dest, md5(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert seen == [("blob.bin.part", False)]  # checked as .part, before any final file
    assert not dest.with_name("blob.bin.part").exists()


def test_checksum_mismatch_leaves_no_file(served, tmp_path):
    dest = tmp_path / "blob.bin"
    with serve(served) as (url, _), pytest.raises(DataIntegrityError) as err:
        downloader.fetch([url + "blob.bin"], dest, "0" * 32)
    assert "checksum mismatch" in str(err.value) and str(dest) in str(err.value)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def test_resume_from_part_with_range(served, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD[:40_000])
    with serve(served) as (url, server):
        downloader.fetch([url + "blob.bin"], dest, md5(PAYLOAD))
    assert server.requests == [("/blob.bin", "bytes=40000-")]
    assert dest.read_bytes() == PAYLOAD


def test_a_damaged_part_is_fetched_whole_again_from_the_same_mirror(served, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"x" * 40_000)  # not the file's beginning
    with serve(served) as (url, server):
        downloader.fetch([url + "blob.bin"], dest, md5(PAYLOAD))
    assert server.requests == [("/blob.bin", "bytes=40000-"), ("/blob.bin", None)]
    assert dest.read_bytes() == PAYLOAD


def test_restart_when_server_ignores_range(served, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"stale bytes from another file")
    with serve(served, honour_range=False) as (url, server):
        downloader.fetch([url + "blob.bin"], dest, md5(PAYLOAD))
    assert server.requests[0][1] is not None  # a Range was asked; a full 200 reply came back
    assert dest.read_bytes() == PAYLOAD


def test_next_mirror_after_failure_and_file_urls(served, tmp_path):
    dest = tmp_path / "blob.bin"
    with serve(served) as (url, _):
        downloader.fetch([url + "absent.bin", url + "blob.bin"], dest, md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    other = tmp_path / "copy.bin"
    downloader.fetch([(served / "blob.bin").as_uri()], other, md5(PAYLOAD))
    assert other.read_bytes() == PAYLOAD
    with pytest.raises(DataMissingError, match="absent.bin"):
        downloader.fetch([(served / "absent.bin").as_uri()], tmp_path / "x", None)
    with pytest.raises(ValueError, match="scheme"):
        downloader.fetch(["ftp://127.0.0.1/blob.bin"], tmp_path / "y", None)


def _synthetic_mnist_source(root, monkeypatch, mirror):
    """Point the mnist source at a loopback mirror, with the md5s of the files written there."""
    write_mnist(root, n_train=30, n_test=20)
    files = tuple((name, md5((root / "mnist" / name).read_bytes())) for name, _ in MNIST_FILES)
    monkeypatch.setitem(sources.SOURCES, "mnist", Source("mnist", "mnist", (mirror,), files, files))


def test_download_mnist_then_load(tmp_path, monkeypatch):
    with serve(tmp_path / "server") as (url, server):
        _synthetic_mnist_source(tmp_path / "server", monkeypatch, url + "mnist/")
        data = tmp_path / "data"
        paths = download("mnist", data_dir=data)
        assert [p.name for p in paths] == [name for name, _ in MNIST_FILES]
        assert len(server.requests) == 4
        assert download("mnist", data_dir=data) == paths and len(server.requests) == 4  # kept
        download("mnist", data_dir=data, force=True)
        assert len(server.requests) == 8
    dm = get_datamodule("mnist", data_dir=data, val_size=3)  # checksums on
    dm.prepare_data()
    dm.setup()
    assert len(dm.datasets["train"]) == 27
    assert download("digits", data_dir=data) == [] and download("assoc") == []
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        download("imagenet")


def test_prepare_data_downloads_only_when_asked(tmp_path, monkeypatch):
    with serve(tmp_path / "server") as (url, server):
        _synthetic_mnist_source(tmp_path / "server", monkeypatch, url + "mnist/")
        data = tmp_path / "data"
        with pytest.raises(DataMissingError):
            get_datamodule("mnist10k", data_dir=data).prepare_data()
        assert server.requests == [] and not data.exists()
        dm = get_datamodule("mnist10k", data_dir=data, download=True, n_train=10, val_size=2)
        dm.prepare_data()
        assert sorted(p for p, _ in server.requests) == [
            "/mnist/t10k-images-idx3-ubyte.gz",
            "/mnist/t10k-labels-idx1-ubyte.gz",
        ]
    dm.setup()
    assert len(dm.datasets["test"]) == 10


def test_wikitext_zip_is_extracted_and_removed(tmp_path, monkeypatch):
    write_wikitext(tmp_path / "src")
    served = tmp_path / "server"
    served.mkdir()
    archive = served / "wikitext-2-v1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((tmp_path / "src" / "wikitext-2").iterdir()):
            zf.write(path, f"wikitext-2/{path.name}")
    spec = sources.SOURCES["wikitext2"]
    with serve(served) as (url, _):
        fetched = (("wikitext-2-v1.zip", md5(archive.read_bytes())),)
        monkeypatch.setitem(
            sources.SOURCES,
            "wikitext2",
            Source("wikitext2", "wikitext-2", (url,), fetched,
                   with_md5s_of(spec, tmp_path / "src" / "wikitext-2").files),
        )
        paths = download("wikitext2", data_dir=tmp_path / "data")
    folder = tmp_path / "data" / "wikitext-2"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)
    assert (folder / "wiki.test.tokens").read_bytes() == (
        tmp_path / "src" / "wikitext-2" / "wiki.test.tokens"
    ).read_bytes()


def test_download_real_mnist_test_files_with_official_checksums(tmp_path):
    mnist = real_data_dir() / "mnist"
    if not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST t10k files not in {mnist} (set ENN_DATA_DIR)")
    with serve(mnist) as (url, _):
        paths = download("mnist10k", data_dir=tmp_path, mirrors=[url])
    assert [p.name for p in paths] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert all(p.read_bytes() == (mnist / p.name).read_bytes() for p in paths)


def test_a_part_rewritten_within_one_clock_tick_is_hashed_afresh(tmp_path):
    """The md5 memo goes by (path, size, mtime); a .part rewritten with as many bytes within
    the file system's clock tick must not be taken for the old one."""
    part = tmp_path / "blob.bin.part"
    part.write_bytes(b"a" * 100)
    stamp = part.stat().st_mtime_ns
    assert sources.md5_file(part) == md5(b"a" * 100)
    part.write_bytes(b"b" * 100)
    os.utime(part, ns=(stamp, stamp))
    assert sources.md5_file(part, remember=False) == md5(b"b" * 100)
    assert sources.md5_file(part) == md5(b"b" * 100)  # the memo now holds the fresh value
