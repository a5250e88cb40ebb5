"""WikiText: token counting, vocabulary, contiguous BPTT batches, the small protocol."""

import pytest
import torch
from data_fixtures import WIKI_TEST, WIKI_TRAIN, WIKI_VALID, write_wikitext

from enn.data import DataIntegrityError, DataMissingError, get_datamodule
from enn.data.base import BPTTWindows, batchify
from enn.data.wikitext import EOS, UNK, read_ids


def count(lines):
    """The official convention, written independently: words of each line, plus <eos>."""
    return sum(len(line.split()) + 1 for line in lines)


def make(tmp_path, name="wikitext2", **options):
    folder = "wikitext-103" if name.startswith("wikitext103") else "wikitext-2"
    write_wikitext(tmp_path, folder)
    dm = get_datamodule(name, data_dir=tmp_path, verify_checksums=False, **options)
    dm.prepare_data()
    dm.setup()
    return dm


def test_blank_lines_and_headings_count_like_the_official_convention(tmp_path):
    write_wikitext(tmp_path)
    stoi = {UNK: 0, EOS: 1}
    ids = read_ids(tmp_path / "wikitext-2" / "wiki.train.tokens", stoi)
    assert len(ids) == count(WIKI_TRAIN) == 9 + 29
    assert ids.dtype.name == "int64"
    words = list(stoi)
    text = [words[i] for i in ids]
    assert text[:6] == [EOS, "=", "Valkyria", "Chronicles", "=", EOS]  # blank line: lone <eos>


def test_vocab_by_frequency_with_first_occurrence_ties(tmp_path):
    dm = make(tmp_path, max_vocab=6, batch_size=2, bptt=4)
    # train counts: the 5; = 6 ... ; sat 2, cat 2, dog 2, . 3, a 2: "=" 6 > the 5 > . 3
    assert dm.vocab == [UNK, EOS, "=", "the", ".", "cat"]  # cat before sat/dog/a: seen first
    assert dm.vocab_size == dm.num_classes == 6
    assert (dm.unk_id, dm.eos_id, dm.pad_id) == (0, 1, None)
    assert dm.input_size is None and dm.seq_len == 4
    full = make(tmp_path, batch_size=2)
    assert len(full.vocab) == 2 + len({w for line in WIKI_TRAIN for w in line.split()})
    test_words = [full.vocab[i] for i in full.streams["test"]]
    assert "bird" not in full.vocab and test_words[1:4] == ["the", UNK, "sat"]


def test_contiguous_batches_continue_row_by_row(tmp_path):
    dm = make(tmp_path, batch_size=2, bptt=4)
    stream = dm.streams["train"]
    n = len(stream) // 2
    batches = list(dm.train_dataloader())
    assert len(batches) == -(-(n - 1) // 4)  # ceil: the last window may be shorter
    x0, y0 = batches[0]
    assert x0.shape == (2, 4) and x0.dtype == y0.dtype == torch.int64
    for (x, y), (x_next, _) in zip(batches, batches[1:], strict=False):
        assert torch.equal(y[:, :-1], x[:, 1:])  # targets: inputs shifted by one
        assert torch.equal(x_next[:, 0], y[:, -1])  # row r resumes where it stopped
    rebuilt = torch.cat([x for x, _ in batches] + [batches[-1][1][:, -1:]], dim=1)  # (2, n)
    assert torch.equal(rebuilt.reshape(-1), stream[: 2 * n])
    assert sum(x.shape[1] for x, _ in batches) == n - 1


def test_windows_and_batchify_edges():
    rows = batchify(torch.arange(10), 3)  # (3, 3): token 9 dropped
    assert rows.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    windows = BPTTWindows(rows, bptt=5)
    assert len(windows) == 1
    x, y = windows[0]
    assert x.tolist() == [[0, 1], [3, 4], [6, 7]] and y.tolist() == [[1, 2], [4, 5], [7, 8]]
    with pytest.raises(IndexError):
        windows[1]
    with pytest.raises(ValueError, match="too short"):
        batchify(torch.arange(5), 3)


def test_small_protocol_holds_out_the_last_tenth(tmp_path):
    dm = make(tmp_path, "wikitext103-small", batch_size=1, bptt=3, val_fraction=0.25)
    total = count(WIKI_VALID)
    n_val = round(total * 0.25)
    assert len(dm.streams["train"]) == total - n_val and len(dm.streams["val"]) == n_val
    assert len(dm.streams["test"]) == count(WIKI_TEST)
    train = [dm.vocab[i] for i in dm.streams["train"]]
    assert train == [EOS, "=", "Heading", "=", EOS, EOS, "the", "cat", "saw", "a"]
    # the tail "bird . <eos>" is held out; its words are not in the vocabulary (train part only)
    assert [dm.vocab[i] for i in dm.streams["val"]] == [UNK, UNK, EOS]
    assert "bird" not in dm.vocab and "." not in dm.vocab
    assert dm.max_vocab == 10_000
    with pytest.raises(ValueError, match="val_fraction"):
        get_datamodule("wikitext103-small", val_fraction=1.5)


def test_empty_token_file_is_refused(tmp_path):
    write_wikitext(tmp_path)
    (tmp_path / "wikitext-2" / "wiki.valid.tokens").write_text(" \n \n", encoding="utf-8")
    dm = get_datamodule("wikitext2", data_dir=tmp_path, verify_checksums=False)
    with pytest.raises(DataIntegrityError, match=r"wiki.valid.tokens: empty token file"):
        dm.setup()


def test_missing_token_file_names_the_command(tmp_path):
    dm = get_datamodule("wikitext103-small", data_dir=tmp_path)
    with pytest.raises(DataMissingError) as err:
        dm.prepare_data()
    assert "wiki.valid.tokens" in str(err.value) and str(tmp_path / "wikitext-103") in str(
        err.value
    )
    assert f"enn data download wikitext103 --data-dir {tmp_path}" in str(err.value)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="bptt"):
        get_datamodule("wikitext2", bptt=0)
    with pytest.raises(ValueError, match="max_vocab"):
        get_datamodule("wikitext2", max_vocab=1)
