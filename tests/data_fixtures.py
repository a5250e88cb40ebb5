"""Writers of small files in the exact official formats, and a loopback HTTP server."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from enn.data import resolve_data_dir, sources

# Lines as in the official files: " = Heading = ", blank lines, spaced punctuation.
WIKI_TRAIN = [
    "",
    "= Valkyria Chronicles =",
    "",
    "the cat sat on the mat .",
    "the dog sat .",
    "",
    "= = Plot = =",
    "",
    "a cat and a dog , the end .",
]
WIKI_VALID = ["", "= Heading =", "", "the cat saw a bird ."]
WIKI_TEST = ["", "the bird sat on the dog ."]


def wiki_text(lines: list[str]) -> str:
    """Lines in the official layout: a space either side, a lone space for a blank line."""
    return "".join(f" {line} \n" if line else " \n" for line in lines)


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """An IDX file, gzipped: magic (0x0000 08 ndim), big-endian dims, then the bytes."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path


def write_mnist(root: Path, n_train: int = 60, n_test: int = 50, seed: int = 0) -> dict:
    """The four official MNIST files with random images; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / "mnist" / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / "mnist" / f"{split}-labels-idx1-ubyte.gz", labels)
        arrays[split] = (images, labels)
    return arrays


CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_batches(n: int = 4, seed: int = 0) -> dict[str, dict]:
    """Six batch dicts in the official layout: b"data" (n, 3072) uint8 CHW, b"labels"."""
    rng = np.random.default_rng(seed)
    return {
        name: {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        for name in CIFAR_BATCHES
    }


def write_cifar(root: Path, batches: dict[str, dict], archive: bool) -> Path:
    """The batches as ``cifar-10-batches-py/`` or packed in ``cifar-10-python.tar.gz``."""
    folder = root / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    if not archive:
        extracted = folder / "cifar-10-batches-py"
        extracted.mkdir()
        for name, batch in batches.items():
            (extracted / name).write_bytes(pickle.dumps(batch, protocol=2))
        return extracted
    path = folder / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            raw = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def write_wikitext(root: Path, folder: str = "wikitext-2") -> Path:
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train", WIKI_TRAIN), ("valid", WIKI_VALID), ("test", WIKI_TEST)):
        (out / f"wiki.{name}.tokens").write_text(wiki_text(lines), encoding="utf-8")
    return out


def with_md5s_of(spec: sources.Source, folder: Path) -> sources.Source:
    """``spec`` with the md5s of the files a test wrote in ``folder`` as its official ones."""
    files = tuple((name, hashlib.md5((folder / name).read_bytes()).hexdigest())
                  for name, _ in spec.files)
    return dataclasses.replace(spec, files=files)


def real_data_dir() -> Path:
    """The data directory the project would use (CI sets ``ENN_DATA_DIR``)."""
    return resolve_data_dir()


class _RangeHandler(SimpleHTTPRequestHandler):
    """Serves files; honours ``Range: bytes=N-`` when the server says so (206 replies)."""

    def do_GET(self) -> None:
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        wanted = self.headers.get("Range")
        if wanted and server.honour_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve(directory: Path, honour_range: bool = True) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    """A static file server on 127.0.0.1 (loopback only) for ``directory``; yields its URL."""

    def handler(*args: object) -> _RangeHandler:
        return _RangeHandler(*args, directory=str(directory))

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    server.honour_range = honour_range
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# Penn Treebank lines as in Mikolov's files: lower case, numbers as N, rare words as <unk>.
PTB_SPLITS = {
    "train": ["no it was n't black monday", "the <unk> fell N points", "the market fell"],
    "valid": ["the market was n't <unk>"],
    "test": ["black monday fell", "zebra N"],  # zebra: unseen in training -> <unk>
}


def write_ptb(root: Path) -> Path:
    out = root / "ptb"
    out.mkdir(parents=True, exist_ok=True)
    for name, lines in PTB_SPLITS.items():
        (out / f"ptb.{name}.txt").write_text(wiki_text(lines), encoding="utf-8")
    return out
