"""Pretraining data: MiniMind classic's PretrainDataset, read lazily from a JSONL file.

Item i is MiniMind's: ids = tokenizer(bos + text + eos, max_length=L, padding='max_length',
truncation=True); X = ids[:-1], Y = ids[1:], loss_mask = (ids != pad)[1:], all int64, length L-1.
Unlike MiniMind, the file is never loaded whole: an index of line offsets is built with numpy
(about 1 s per GB) and each line is read with `os.pread` when asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from .errors import DataError
from .storage.atomic import atomic_write

_CHUNK = 64 << 20  # bytes read at a time while indexing
_BOM = b"\xef\xbb\xbf"


BUNDLED = "./toydata/"  # the default corpora's folder, relative to where a command runs


def resolve_data_path(path: str | os.PathLike) -> Path:
    """The path as given; a missing ./toydata/ default falls back to the copy bundled with the
    package, so `minimind train` works from any folder."""
    p = Path(path)
    if p.exists() or not str(path).startswith(BUNDLED):
        return p
    name = str(path)[len(BUNDLED):]
    here = Path(__file__).resolve().parent
    for bundled in (here / "_toydata" / name, here.parent / "toydata" / name):
        if bundled.is_file():
            return bundled
    return p


def data_fingerprint(path: str | os.PathLike) -> dict:
    """What identifies a corpus file's content cheaply: its size and a hash of its first and last MiB
    (not its mtime: a touch alone is not a change)."""
    p = Path(path)
    stat = p.stat()
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        digest.update(f.read(1 << 20))
        if stat.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
        digest.update(f.read(1 << 20))
    return {"size": stat.st_size, "head_tail_sha256": digest.hexdigest()}


def check_data_file(path: str | os.PathLike) -> Path:
    """The path as a readable, non-empty regular file, or a DataError that says what to do."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p} does not exist: check --data_path (a .jsonl file, one "
                        "{\"text\": ...} per line)")
    if p.is_dir():
        raise DataError(f"data path {p} is a directory: give the .jsonl file inside it")
    if not os.access(p, os.R_OK):
        raise DataError(f"data file {p} is not readable: check its permissions")
    if p.stat().st_size == 0:
        raise DataError(f"data file {p} is empty: it needs at least one line like {{\"text\": \"...\"}}")
    return p


def index_lines(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, line_numbers) of every non-empty line; ends exclude the newline."""
    ends = []
    offset = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10) + offset
            ends.append(newlines)
            offset += len(chunk)
    ends_all = np.concatenate(ends) if ends else np.empty(0, dtype=np.int64)
    if offset and (ends_all.size == 0 or ends_all[-1] != offset - 1):
        ends_all = np.append(ends_all, offset)  # last line without a trailing newline
    starts_all = np.concatenate(([0], ends_all[:-1] + 1)).astype(np.int64)
    ends_all = ends_all.astype(np.int64)
    line_numbers = np.arange(1, len(starts_all) + 1, dtype=np.int64)
    keep = ends_all - starts_all > 0
    short = np.flatnonzero(keep & (ends_all - starts_all <= 3))
    if short.size:  # "\r" or "\ufeff" alone are blank too; there are few such lines, check each
        with open(path, "rb") as f:
            for i in short:
                f.seek(starts_all[i])
                if not f.read(int(ends_all[i] - starts_all[i])).replace(_BOM, b"").strip():
                    keep[i] = False
    return starts_all[keep], ends_all[keep], line_numbers[keep]


class JsonlFile:
    """Random access to the JSON object on each non-blank line of a file, errors naming file and line.
    Subclasses say what each object must hold (`item`)."""

    example = '{"text": "..."}'  # what a line looks like, for error messages
    key = "text"  # the field every line must have

    def __init__(self, path: str | os.PathLike):
        self.path = check_data_file(path)
        self.starts, self.ends, self.line_numbers = index_lines(self.path)
        if len(self.starts) == 0:
            raise DataError(f"data file {self.path} has only blank lines: add lines like {self.example}")
        self._fd: Optional[int] = None
        self._fd_pid: Optional[int] = None

    def __len__(self) -> int:
        return len(self.starts)

    def __getstate__(self) -> dict:  # DataLoader workers reopen the file themselves
        return {**self.__dict__, "_fd": None, "_fd_pid": None}

    def _file(self) -> int:
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd, self._fd_pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and self._fd_pid == os.getpid():
            os.close(fd)

    def where(self, index: int) -> str:
        return f"{self.path}:{int(self.line_numbers[index])}"

    def record(self, index: int) -> dict:
        start, end = int(self.starts[index]), int(self.ends[index])
        raw = os.pread(self._file(), end - start, start)
        if start == 0 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{self.where(index)}: not valid UTF-8 (byte {e.start}): re-save the file as UTF-8") from None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            # json's own messages may end in "at" ("Unterminated string starting at"): one "at" before the column
            raise DataError(f"{self.where(index)}: malformed JSON ({e.msg.removesuffix(' at')} at column {e.colno}): "
                            f"each line must be one object like {self.example}") from None
        if not isinstance(obj, dict) or self.key not in obj:
            raise DataError(f"{self.where(index)}: no \"{self.key}\" field: each line must be an object like "
                            f"{self.example}")
        return obj

    def string(self, index: int, value: object, name: str) -> str:
        """`value` as a string that a tokenizer can take, or a DataError naming the line and the field."""
        if not isinstance(value, str):
            raise DataError(f"{self.where(index)}: {name} is a {type(value).__name__}, not a string: "
                            "quote it as a JSON string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # valid JSON ("\ud800") but not text: a lone UTF-16 surrogate
            raise DataError(f"{self.where(index)}: {name} holds a lone UTF-16 surrogate ({value[e.start]!r} at "
                            f"character {e.start}): it is not text; fix or drop the line") from None
        return value

    def item(self, index: int) -> object:
        raise NotImplementedError

    def validate(self, limit: Optional[int] = None) -> None:
        """Read and check every line (or the first `limit`), raising the first problem found."""
        for i in range(len(self) if limit is None else min(limit, len(self))):
            self.item(i)


class JsonlTexts(JsonlFile):
    """Pretraining text: `{"text": ...}` per line."""

    def text(self, index: int) -> str:
        return self.string(index, self.record(index)["text"], '"text"')

    item = text


DOCUMENT_ROWS = ("whole", "wrapped")


class PretrainDataset(Dataset):
    """MiniMind's PretrainDataset over a lazily read JSONL file, in either family's row layout:

    - "whole" (classic): ids = tokenizer(bos + text + eos, max_length=L, truncation=True) (a too-long
      text loses its eos), right-padded;
    - "wrapped" (MiniMind-3): ids = [bos] + tokenizer(text)[:L-2] + [eos], right-padded.
    X = ids[:-1], Y = ids[1:], loss_mask = (ids != pad)[1:], all int64 of length L-1 (MiniMind-3's
    unshifted (ids, labels = ids with pad -> -100) describe the same targets).
    """

    def __init__(self, path: str | os.PathLike, tokenizer, max_length: int = 512, rows: str = "whole"):
        if max_length < 2:
            raise DataError(f"max_length must be at least 2 (X and Y are shifted by one), got {max_length}")
        if rows not in DOCUMENT_ROWS:
            raise ValueError(f"rows must be one of {DOCUMENT_ROWS}, got {rows!r}")
        self.texts = JsonlTexts(path)
        self.path = self.texts.path
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.rows = rows
        self.pad_id = tokenizer.pad_token_id
        self._backend = self.plain_encoder(tokenizer)

    @staticmethod
    def plain_encoder(tokenizer):
        """The Rust tokenizer behind `tokenizer` when its plain encode is exactly the Hugging Face call
        (no tokens added by a post-processor, as MiniMind's), else None. A private copy: Hugging Face
        calls leave truncation/padding settings on the shared one."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        post = backend.post_processor
        if post is not None and post.num_special_tokens_to_add(False) > 0:
            return None
        return _plain_copy(backend)

    def __len__(self) -> int:
        return len(self.texts)

    def encode(self, text: str) -> list[int]:
        """MiniMind's tokenisation of one document, truncated and right-padded to max_length."""
        tok, length = self.tokenizer, self.max_length
        if self.rows == "wrapped":
            ids = [tok.bos_token_id] + self._head(text, length - 2, special=False) + [tok.eos_token_id]
        else:
            ids = self._head(f"{tok.bos_token}{text}{tok.eos_token}", length, special=True)
        return ids + [self.pad_id] * (length - len(ids))

    def _head(self, text: str, n: int, special: bool) -> list[int]:
        """The first n ids of `text`, as the Hugging Face call with truncation gives them (`special`:
        its add_special_tokens, which only matters for a tokenizer with a post-processor)."""
        if n <= 0:
            return []
        if self._backend is None:
            return self.tokenizer(text, max_length=n, truncation=True, add_special_tokens=special).input_ids
        ids = self._encode_prefix(text, n) if len(text) > 64 * n else None
        return ids if ids is not None else self._backend.encode(text).ids[:n]

    def _encode_prefix(self, text: str, n: int) -> Optional[list[int]]:
        """First n ids of a very long text from a prefix of it (a 10 MB line costs ~ms).

        BPE merges never cross pre-tokenizer words, so ids from words that end well before the cut
        are the full text's ids; fall back (None) if the prefix does not reach that far.
        """
        enc = self._backend.encode(text[: 32 * n])
        words = enc.word_ids
        if len(enc.ids) <= n or words[n - 1] is None or words[-1] is None:
            return None
        return enc.ids[:n] if words[n - 1] < words[-1] - 1 else None

    def __getitem__(self, key: int):
        ids = torch.tensor(self.encode(self.texts.text(key % len(self))), dtype=torch.long)
        mask = (ids != self.pad_id).long()
        return ids[:-1], ids[1:], mask[1:]


class EpochSampler(torch.utils.data.Sampler[int]):
    """Document order for one epoch, startable mid-way: resume skips work instead of redoing it.

    In order (the seed notebook) or MiniMind-3's permutation seeded by seed + epoch, so a resumed run sees exactly the
    documents an uninterrupted one would. `start` counts samples of the epoch already consumed by
    all ranks together, so a run can resume with another number of processes. With several ranks
    the rest of the order is padded (wrapping around, as DistributedSampler does) to a multiple of
    the world size, and rank r takes every world-th index: every rank runs the same number of steps.
    """

    def __init__(self, size: int, shuffle: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, min(start, self.size)

    def order(self) -> list[int]:
        """This rank's rows of the rest of the epoch, in order."""
        if self.shuffle:  # MiniMind-3's order: torch.manual_seed(seed + epoch); torch.randperm(size)
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.size, generator=g).tolist()
        else:
            indices = list(range(self.size))
        rest = indices[self.start:]
        rest += indices[:(-len(rest)) % self.world_size]
        return rest[self.rank::self.world_size]

    def __iter__(self):
        # Each key names its row and its epoch (epoch * size + row): a dataset that draws per-row
        # randomness (SFT's system prompts) gets the same draws in any worker and after a resume.
        return iter(self.epoch * self.size + i for i in self.order())

    def __len__(self) -> int:
        return self.per_rank(self.size - self.start, self.world_size)

    @staticmethod
    def per_rank(samples: int, world_size: int) -> int:
        return -(-samples // world_size)


# ---- packing: documents concatenated into full rows ------------------------------------------------

CACHE_FORMAT = 2  # 2: a second file holds where each document ends


def default_cache_dir() -> Path:
    """Where token caches live: $MINIMIND_CACHE, else $XDG_CACHE_HOME/minimind-tui, else ~/.cache/minimind-tui."""
    if os.environ.get("MINIMIND_CACHE"):
        return Path(os.environ["MINIMIND_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minimind-tui"


class TokenCache:
    """Every document tokenised once (bos + text + eos, no truncation) into one flat memory-mapped
    array (and where each document ends), reused across runs and rebuilt when the corpus file or the
    tokenizer changes."""

    BATCH = 512  # documents per encode_batch call (the Rust tokenizer parallelises within a batch)

    def __init__(self, texts: JsonlTexts, tokenizer, cache_dir: Optional[Path] = None):
        self.texts, self.tokenizer = texts, tokenizer
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        stat = texts.path.stat()
        h = hashlib.sha256()
        h.update(f"{CACHE_FORMAT}|{texts.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        h.update(_fingerprint(tokenizer).encode())
        h.update(f"{tokenizer.bos_token}|{tokenizer.eos_token}".encode())
        self.key = h.hexdigest()[:16]
        self.dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.uint32
        self.path = self.cache_dir / f"{texts.path.stem}-{self.key}.tokens"
        self.ends_path = self.path.with_suffix(".ends")
        self.built = False

    def load(self) -> np.ndarray:
        """The token array, building the cache files first if needed."""
        if not (self.path.is_file() and self.ends_path.is_file()):
            self._build()
            self.built = True
        return np.memmap(self.path, dtype=self.dtype, mode="r")

    def document_ends(self) -> np.ndarray:
        """Where each document's tokens end in the array (exclusive), in file order."""
        return np.memmap(self.ends_path, dtype=np.int64, mode="r")

    def _build(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the token cache folder {self.cache_dir} ({e.strerror}): "
                            "set MINIMIND_CACHE to a writable folder") from None
        encoder = PretrainDataset.plain_encoder(self.tokenizer)
        tok = self.tokenizer
        lengths: list[int] = []

        def write(f) -> None:
            for start in range(0, len(self.texts), self.BATCH):
                docs = [f"{tok.bos_token}{self.texts.text(i)}{tok.eos_token}"
                        for i in range(start, min(start + self.BATCH, len(self.texts)))]
                if encoder is not None:
                    ids = [e.ids for e in encoder.encode_batch(docs)]
                else:
                    ids = tok(docs).input_ids
                lengths.extend(len(x) for x in ids)
                f.write(np.concatenate([np.asarray(x, dtype=self.dtype) for x in ids]).tobytes())

        # Let the Rust tokenizer use every core while building (DataLoader workers fork later,
        # so parallelism is switched back off afterwards).
        previous = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        try:
            atomic_write(self.path, write)
            atomic_write(self.ends_path, lambda f: f.write(np.cumsum(lengths, dtype=np.int64).tobytes()))
        finally:
            os.environ["TOKENIZERS_PARALLELISM"] = previous if previous is not None else "false"


def _fingerprint(tokenizer) -> str:
    """What identifies a tokenizer's output: its Rust definition without the truncation/padding
    state that Hugging Face calls leave on it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return repr(sorted(tokenizer.get_vocab().items()))
    return _plain_copy(backend).to_str()


def _plain_copy(backend):
    """A private copy of a Rust tokenizer without truncation or padding."""
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


class PackedDataset(Dataset):
    """Rows of max_length tokens cut from the concatenated documents (each ends with eos), no padding.

    Consecutive rows overlap by one token, so every token after the first is a target exactly once;
    only the final row may be short (padded, its padding masked out). With `ends` (each document's
    end in `tokens`) and `documents` (which of them, in order), rows are cut from those documents only:
    a held-out split never leaks into the training rows.
    """

    def __init__(self, tokens: np.ndarray, max_length: int, pad_id: int, ends: Optional[np.ndarray] = None,
                 documents: Optional[np.ndarray] = None):
        if max_length < 2:
            raise DataError(f"max_length must be at least 2, got {max_length}")
        self.tokens, self.max_length, self.pad_id = tokens, max_length, pad_id
        self.ends = ends
        self.stride = max_length - 1
        self.spans: Optional[tuple[np.ndarray, np.ndarray]] = None  # (starts in tokens, cumulative lengths)
        total = len(tokens)
        if documents is not None:
            if ends is None:
                raise ValueError("choosing documents needs their ends")
            doc_ends = np.asarray(ends)[documents]
            doc_starts = np.where(documents > 0, np.asarray(ends)[np.maximum(documents - 1, 0)], 0)
            self.spans = (doc_starts, np.concatenate(([0], np.cumsum(doc_ends - doc_starts))))
            total = int(self.spans[1][-1])
        self.n_targets = max(total - 1, 0)

    def select(self, documents: np.ndarray) -> "PackedDataset":
        """The same packing over only these documents (file order indices)."""
        return PackedDataset(self.tokens, self.max_length, self.pad_id, self.ends, np.asarray(documents, dtype=np.int64))

    def __len__(self) -> int:
        return -(-self.n_targets // self.stride)

    def _tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the (chosen documents') concatenation."""
        if self.spans is None:
            return self.tokens[start:stop]
        doc_starts, cumulative = self.spans
        stop = min(stop, int(cumulative[-1]))
        pieces = []
        doc = int(np.searchsorted(cumulative, start, side="right")) - 1
        while start < stop:
            offset = start - int(cumulative[doc])
            take = min(stop - start, int(cumulative[doc + 1]) - start)
            begin = int(doc_starts[doc]) + offset
            pieces.append(self.tokens[begin:begin + take])
            start += take
            doc += 1
        return np.concatenate(pieces) if pieces else self.tokens[:0]

    def __getitem__(self, key: int):
        start = (key % len(self)) * self.stride
        chunk = torch.from_numpy(self._tokens(start, start + self.max_length).astype(np.int64))
        real = len(chunk) - 1
        if len(chunk) < self.max_length:
            chunk = torch.cat([chunk, chunk.new_full((self.max_length - len(chunk),), self.pad_id)])
        mask = torch.zeros(self.max_length - 1, dtype=torch.long)
        mask[:real] = 1
        return chunk[:-1], chunk[1:], mask


# ---- one way to turn a corpus file into rows -------------------------------------------------------

VALIDATE_ALL_BELOW = 64 << 20  # corpora smaller than this are checked line by line before training


def validation_limit(source: JsonlFile) -> Optional[int]:
    """How many lines to check before training: all of a small corpus, the first 1000 of a big one."""
    return None if source.path.stat().st_size < VALIDATE_ALL_BELOW else 1000


class Rows(Protocol):
    """What a DataLoader reads: indexable (X, Y, loss_mask) rows with a length."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class SubsetRows:
    """Some lines' rows of a one-row-per-line dataset, keeping keys' epochs (epoch * size + row)."""

    def __init__(self, rows: Rows, lines: np.ndarray):
        self.rows, self.lines = rows, np.asarray(lines, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, key: int):
        epoch, i = divmod(key, len(self.lines))
        return self.rows[epoch * len(self.rows) + int(self.lines[i])]


@dataclass
class TrainingSet:
    """A corpus ready for a DataLoader: its lines and the rows built from them."""

    source: JsonlFile  # the corpus, one document or conversation per line
    rows: Rows  # what the loader reads: one row per line, or packed rows
    note: Optional[str] = None  # one line worth telling (how packing went, rows that teach nothing)
    lines: Optional[np.ndarray] = None  # the lines in use, when not all of them (a held-out split)

    @property
    def path(self) -> Path:
        return self.source.path

    @property
    def n_docs(self) -> int:
        return len(self.source) if self.lines is None else len(self.lines)

    def select(self, lines: np.ndarray) -> "TrainingSet":
        """This set over only these lines (file order indices)."""
        rows = self.rows.select(lines) if isinstance(self.rows, PackedDataset) else SubsetRows(self.rows, lines)
        return TrainingSet(self.source, rows, self.note, np.asarray(lines, dtype=np.int64))


def split_lines(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training lines, held-out lines) by a seeded shuffle of the line indices: the same every time
    for the same corpus, fraction and seed (so also on resume), each part in file order."""
    held = round(n * fraction)
    if held < 1:
        raise DataError(f"eval_split {fraction} of {n} documents holds out none: raise --eval_split or use --eval_data")
    if held >= n:
        raise DataError(f"eval_split {fraction} of {n} documents leaves no training document: lower --eval_split")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(order[held:]), np.sort(order[:held])


def build_training_set(path: str | os.PathLike, tokenizer, max_seq_len: int, packing: bool,
                       rows: str = "whole") -> TrainingSet:
    """Check and index a corpus and build its rows; raise DataError before any work."""
    documents = PretrainDataset(resolve_data_path(path), tokenizer, max_seq_len, rows)
    texts = documents.texts
    texts.validate(validation_limit(texts))
    if not packing:
        return TrainingSet(texts, documents)
    started = time.perf_counter()
    cache = TokenCache(texts, tokenizer)
    tokens = cache.load()
    packed = PackedDataset(tokens, max_seq_len, tokenizer.pad_token_id, cache.document_ends())
    how = f"built in {time.perf_counter() - started:.1f} s" if cache.built else "reused"
    return TrainingSet(texts, packed, f"packing: {len(tokens):,} tokens into {len(packed)} rows of {max_seq_len} "
                                          f"(token cache {how}: {cache.path})")
