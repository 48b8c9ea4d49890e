"""Pseudonymisation (``privacy.pseudonymize_ids: true``): no real patient or sample ID, and no
real source path (whose folder names are patient IDs and DICOM UIDs), in anything under
``results/``.

- The key of the keyed hashes (HMAC-SHA256) comes from the environment variable
  ``ONCOROBUST_SALT`` or from the file named by ``privacy.salt_file``, never from the config
  itself or a rule parameter (Snakemake records those under ``.snakemake/``); an empty key is
  refused.
- Ingest writes the public manifest (``P-…`` patients, ``S-…`` samples, ``F-…`` sources) and a
  private mapping (pseudonym → real IDs and the real source path) under ``privacy.mapping_dir``
  (default ``.oncorobust_private/{ds}/``, outside ``results/``), which preprocess needs to find
  the files again; the real paths of skipped inputs go there too.
- Log records and messages pass through a :class:`Scrubber` that replaces every known real
  ID and path by its pseudonym.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

if TYPE_CHECKING:  # pandas is imported where it runs: the workflow imports this module to plan its jobs
    import pandas as pd

from oncorobust.errors import ConfigError, DataError

SALT_ENV = "ONCOROBUST_SALT"
DEFAULT_MAPPING_DIR = ".oncorobust_private"
MAPPING_COLUMNS = ["sample_id", "patient_id", "source", "real_sample_id", "real_patient_id", "real_source"]


def enabled(privacy: dict | None) -> bool:
    """Whether IDs are pseudonymised.

    Args:
        privacy: the ``privacy`` config, or None.

    Returns:
        True when ``privacy.pseudonymize_ids`` is set (truthy).
    """
    return bool(privacy and privacy.get("pseudonymize_ids"))


def check_privacy(privacy: dict | None, results: str = "results") -> None:
    """Load-time checks of the ``privacy`` config: no ``salt`` key, a non-empty key available
    when pseudonymising, a mapping folder outside ``results``.

    Args:
        privacy: the ``privacy`` config (None or a non-dict passes: the schema reports a wrong type).
        results: the ``results`` folder of the config.

    Raises:
        ConfigError: naming the key, the variable or the file.
    """
    if not isinstance(privacy, dict):
        return  # the schema names the wrong type
    if "salt" in privacy:
        raise ConfigError("privacy.salt is no longer read (a key in the config ends up in Snakemake's"
                          f" records and in shared configs): remove it and set the environment variable"
                          f" {SALT_ENV} or privacy.salt_file")
    if privacy.get("pseudonymize_ids") is True:
        load_salt(privacy)
        mdir = Path(os.path.abspath(mapping_dir(privacy)))
        res = Path(os.path.abspath(results))
        if mdir == res or res in mdir.parents:
            raise ConfigError(f"privacy.mapping_dir = {privacy.get('mapping_dir')} lies inside results ="
                              f" {results}: the real IDs must stay out of the results; choose another folder")


def load_salt(privacy: dict | None) -> str:
    """The pseudonymisation key: ``$ONCOROBUST_SALT`` if set, else the content of
    ``privacy.salt_file`` (surrounding whitespace stripped).

    Args:
        privacy: the ``privacy`` config (``salt_file``), or None.

    Returns:
        The key, whitespace stripped.

    Raises:
        ConfigError: no key given, an unreadable salt file, or an empty key.
    """
    privacy = privacy or {}
    if SALT_ENV in os.environ:
        value, where = os.environ[SALT_ENV], f"the environment variable {SALT_ENV}"
    elif privacy.get("salt_file"):
        path = Path(privacy["salt_file"])
        try:
            value = path.read_text()
        except OSError as exc:
            raise ConfigError(f"privacy.salt_file = {path}: cannot be read ({exc.strerror or exc})") from None
        where = f"privacy.salt_file = {path}"
    else:
        raise ConfigError(f"privacy.pseudonymize_ids is true but there is no key: set the environment"
                          f" variable {SALT_ENV} or privacy.salt_file (a file holding a secret string)")
    if not value.strip():
        raise ConfigError(f"the pseudonymisation key ({where}) is empty: an empty key makes the"
                          " pseudonyms reversible by anyone; use a long random secret")
    return value.strip()


def mapping_dir(privacy: dict | None) -> str:
    """The folder of the private mappings.

    Args:
        privacy: the ``privacy`` config, or None.

    Returns:
        ``privacy.mapping_dir``, else :data:`DEFAULT_MAPPING_DIR` (``.oncorobust_private``).
    """
    return str((privacy or {}).get("mapping_dir") or DEFAULT_MAPPING_DIR)


def private_paths(privacy: dict | None, ds: str) -> dict[str, str]:
    """The private files of dataset ``ds``: ``mapping`` (pseudonym → real), ``skipped`` (real paths
    of the inputs ingest skipped), ``preprocess_skipped`` (of the files preprocess skipped).

    Args:
        privacy: the ``privacy`` config, or None.
        ds: the dataset key.

    Returns:
        ``{"mapping", "skipped", "preprocess_skipped"}`` → CSV paths under ``<mapping_dir>/<ds>/``.
    """
    d = Path(mapping_dir(privacy)) / ds
    return {"mapping": str(d / "mapping.csv"), "skipped": str(d / "skipped.csv"),
            "preprocess_skipped": str(d / "preprocess_skipped.csv")}


class Pseudonymizer:
    """Keyed hashes: ``P-`` patients, ``S-`` samples, ``F-`` files (16 hex digits each).

    Args:
        salt: the key (from :func:`load_salt`).

    Raises:
        ConfigError: an empty key.
    """

    def __init__(self, salt: str):
        if not salt:
            raise ConfigError("the pseudonymisation key is empty")
        self._key = salt.encode()

    def _h(self, prefix: str, value: object) -> str:
        return prefix + hmac.new(self._key, str(value).encode(), hashlib.sha256).hexdigest()[:16]

    def patient(self, value: object) -> str:
        """The pseudonym of a patient ID.

        Args:
            value: the real patient ID (hashed as ``str(value)``).

        Returns:
            ``P-`` followed by 16 hex digits.
        """
        return self._h("P-", value)

    def sample(self, value: object) -> str:
        """The pseudonym of a sample ID.

        Args:
            value: the real sample ID (hashed as ``str(value)``).

        Returns:
            ``S-`` followed by 16 hex digits.
        """
        return self._h("S-", value)

    def file(self, value: object) -> str:
        """The pseudonym of a source path.

        Args:
            value: the real source path (hashed as ``str(value)``).

        Returns:
            ``F-`` followed by 16 hex digits.
        """
        return self._h("F-", value)

    def fingerprint(self) -> str:
        """A one-way fingerprint of the key (a rule param: a new key reruns ingest).

        Returns:
            ``K-`` followed by 8 hex digits.
        """
        return self._h("K-", "oncorobust key fingerprint")[:10]


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching any of ``words``, the longest first, compiled as a trie (fast with
    thousands of words, unlike a flat alternation)."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        end = "" in node
        alts = []
        for ch in sorted(k for k in node if k):
            run, child = ch, node[ch]
            while len(child) == 1 and "" not in child:  # compress chains of single children
                (nxt, child), = child.items()
                run += nxt
            alts.append(re.escape(run) + build(child))
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if end else body

    return build(trie)


class Scrubber(logging.Filter):
    """Replaces known real IDs and paths by their pseudonyms in text and in log records.

    A match must not be glued to letters or digits on either side (so a short ID like ``12``
    is not replaced inside ``2012``); longer strings win (a sample ID that contains its
    patient's ID is replaced whole).
    """

    def __init__(self) -> None:
        super().__init__()
        self._map: dict[str, str] = {}
        self._rx: re.Pattern | None = None
        self._roots: list[re.Pattern] = []
        self._root_names: set[str] = set()

    def add_root(self, root: str | os.PathLike) -> None:
        """Also hide any other path under ``root`` (say a folder an adapter names in a warning):
        the part after the root, up to a space or quote, becomes ``<hidden>``.

        Args:
            root: the source's root folder (matched as given and as an absolute path).
        """
        for r in sorted({str(Path(root)), os.path.abspath(root)} - self._root_names, key=len, reverse=True):
            self._root_names.add(r)
            self._roots.append(re.compile(r"(?<![\w./-])(" + re.escape(r) + r")/[^\s'\"(),;\[\]]+"))

    def add(self, real: object, public: str) -> None:
        """Replace ``real`` by ``public`` from now on (None, NaN, empty or equal values are ignored).

        Args:
            real: the real ID or path.
            public: its pseudonym.
        """
        real = "" if real is None or (isinstance(real, float) and real != real) else str(real)
        if real and real != public and self._map.get(real) != public:
            self._map[real] = public
            self._rx = None

    def __len__(self) -> int:
        return len(self._map)

    def learn_records(self, pz: Pseudonymizer, records: Iterable[dict], skipped: Iterable[dict] = (),
                      root: str | os.PathLike | None = None) -> None:
        """Learn the pseudonyms of adapter records and skipped inputs (ingest).

        Args:
            pz: the pseudonymizer giving the pseudonyms.
            records: the adapter's records (``sample_id``, ``patient_id``, ``source``).
            skipped: the skipped inputs (``file``, ``sample_id``).
            root: the source's root folder (also hidden, see :meth:`add_root`), or None.
        """
        if root:
            self.add_root(root)
        for r in records:
            self.add(r.get("sample_id"), pz.sample(r.get("sample_id")))
            self.add(r.get("patient_id"), pz.patient(r.get("patient_id")))
            self._add_source(r.get("source"), pz.file(r.get("source")), root)
        for s in skipped:
            if s.get("sample_id"):
                self.add(s["sample_id"], pz.sample(s["sample_id"]))
            if s.get("file"):
                self._add_source(s["file"], public_file(pz, s["file"], root), root)

    def learn_mapping(self, mapping: pd.DataFrame, root: str | os.PathLike | None = None) -> None:
        """Learn the pseudonyms of a private mapping (preprocess).

        Args:
            mapping: the private mapping (:data:`MAPPING_COLUMNS`).
            root: the source's root folder (also hidden, see :meth:`add_root`), or None.
        """
        if root:
            self.add_root(root)
        for row in mapping.itertuples(index=False):
            self.add(row.real_sample_id, row.sample_id)
            self.add(row.real_patient_id, row.patient_id)
            self._add_source(row.real_source, row.source, root)

    def _add_source(self, real: object, public: str, root: str | os.PathLike | None) -> None:
        if real is None or str(real) == "":
            return
        self.add(real, public)
        if root:
            self.add(str(Path(root) / str(real)), public)
            self.add(os.path.abspath(Path(root) / str(real)), public)

    def scrub(self, text: str) -> str:
        """``text`` with every known real ID and path replaced by its pseudonym.

        Args:
            text: any text (a message, a log line).

        Returns:
            The scrubbed text; paths under a known root end in ``/<hidden>``.
        """
        if not text:
            return text
        if self._map:
            if self._rx is None:
                self._rx = re.compile(r"(?<![A-Za-z0-9])(?:" + _trie_pattern(self._map) + r")(?![A-Za-z0-9])")
            text = self._rx.sub(lambda m: self._map[m.group(0)], text)
        for rx in self._roots:
            text = rx.sub(lambda m: m.group(1) + "/<hidden>", text)
        return text

    def scrub_frame(self, df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
        """A copy of ``df`` with the strings of ``columns`` scrubbed (:meth:`scrub`).

        Args:
            df: the frame.
            columns: the columns to scrub (absent ones are ignored).

        Returns:
            The scrubbed copy.
        """
        df = df.copy()
        for c in columns:
            if c in df:
                df[c] = [self.scrub(v) if isinstance(v, str) else v for v in df[c]]
        return df

    def filter(self, record: logging.LogRecord) -> bool:  # logging.Filter API
        """Scrub ``record``'s message and traceback in place (its args are merged into the message).

        Args:
            record: the log record.

        Returns:
            True (the record is always written).
        """
        record.msg = self.scrub(record.getMessage())
        record.args = ()
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True

    def attach(self) -> None:
        """Scrub everything the root logger's current handlers write from now on."""
        for h in logging.getLogger().handlers:
            if self not in h.filters:
                h.addFilter(self)

    @contextlib.contextmanager
    def buffered(self) -> Iterator[None]:
        """Hold every log record until the block ends, then write them scrubbed: the IDs an
        adapter logs are known only once it has read them. The filter stays on the handlers, so
        an error logged after the block (``logs.step_logging``) is scrubbed too.

        Yields:
            None; the records are written (scrubbed) when the block ends, normally or not.
        """
        root = logging.getLogger()
        handlers = list(root.handlers)
        held: list[logging.LogRecord] = []

        class _Hold(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                held.append(record)

        hold = _Hold(level=logging.NOTSET)
        root.handlers = [hold]
        try:
            yield
        finally:
            root.handlers = handlers
            self.attach()
            for record in held:
                for h in handlers:
                    if record.levelno >= h.level:
                        h.handle(record)


def public_file(pz: Pseudonymizer, file: str, root: str | os.PathLike | None) -> str:
    """The pseudonym of a file: of its path relative to ``root`` when it lies inside.

    Args:
        pz: the pseudonymizer.
        file: the real file path.
        root: the source's root folder, or None.

    Returns:
        The ``F-`` pseudonym.
    """
    rel = str(file)
    if root:
        with contextlib.suppress(ValueError):
            rel = str(Path(os.path.abspath(file)).relative_to(os.path.abspath(root)))
    return pz.file(rel)


def protect_ingest(manifest: pd.DataFrame, skipped: pd.DataFrame, pz: Pseudonymizer,
                   root: str | os.PathLike | None = None,
                   scrubber: Scrubber | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(public manifest, public skipped, private mapping, private skipped) of ingest's output.

    The public manifest carries ``P-``/``S-``/``F-`` pseudonyms for ``patient_id``,
    ``sample_id`` and ``source``; the mapping (:data:`MAPPING_COLUMNS`) lets preprocess find the
    real file of each sample. Skipped rows keep their stage and reason (scrubbed), the file and
    sample become pseudonyms; the private skipped frame is the original.

    Args:
        manifest: ingest's manifest with real IDs and sources.
        skipped: ingest's skipped frame (``stage``, ``file``, ``sample_id``, ``reason``).
        pz: the pseudonymizer.
        root: the source's root folder (sources are pseudonymised relative to it), or None.
        scrubber: the scrubber to teach the pseudonyms (a new one if None).

    Returns:
        (public manifest, public skipped, private mapping, private skipped).
    """
    scrubber = scrubber or Scrubber()
    scrubber.learn_records(pz, manifest.to_dict("records"), skipped.to_dict("records"), root)
    public = manifest.copy()
    public["patient_id"] = [pz.patient(v) for v in manifest.patient_id]
    public["sample_id"] = [pz.sample(v) for v in manifest.sample_id]
    public["source"] = [pz.file(v) for v in manifest.source]
    import pandas as pd

    mapping = pd.DataFrame({"sample_id": public.sample_id, "patient_id": public.patient_id,
                            "source": public.source, "real_sample_id": manifest.sample_id.astype(str),
                            "real_patient_id": manifest.patient_id.astype(str),
                            "real_source": manifest.source.astype(str)})[MAPPING_COLUMNS]
    pub_skipped = skipped.copy()
    if len(pub_skipped):
        pub_skipped["file"] = [public_file(pz, f, root) if f else f for f in skipped.file.fillna("")]
        pub_skipped["sample_id"] = [pz.sample(s) if s else s for s in skipped.sample_id.fillna("")]
        pub_skipped = scrubber.scrub_frame(pub_skipped, ["reason"])
    return public, pub_skipped, mapping, skipped


def write_private_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a private file (mapping, real skipped paths): readable by its owner only (0600, in a
    0700 folder), atomically.

    Args:
        df: the private frame.
        path: ``<mapping_dir>/<ds>/<name>.csv`` (its folders are created).

    Raises:
        WriteError: naming ``path``, when the disk is full or the write fails otherwise.
    """
    from oncorobust.io import write_csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(Path(mapping_dir_of(path)), 0o700)
        os.chmod(path.parent, 0o700)
    write_csv(df, path)
    os.chmod(path, 0o600)


def mapping_dir_of(path: Path) -> Path:
    """The mapping folder of a private file ``<mapping_dir>/<ds>/<name>``.

    Args:
        path: the private file.

    Returns:
        Its grandparent folder.
    """
    return path.parent.parent


def real_manifest(public: pd.DataFrame, mapping: pd.DataFrame, mapping_file: str) -> pd.DataFrame:
    """The public manifest with each row's real ``source`` (IDs stay pseudonyms), for preprocess.

    Args:
        public: the public manifest.
        mapping: the private mapping (:func:`read_mapping`).
        mapping_file: the mapping's path (named in the message).

    Returns:
        A copy of ``public`` with the real ``source`` of each sample.

    Raises:
        DataError: a sample of the manifest is not in the mapping (ingest ran with another key,
            or the mapping was replaced): rerun ingest.
    """
    real = mapping.set_index("sample_id").real_source
    missing = sorted(set(public.sample_id.astype(str)) - set(real.index.astype(str)))
    if missing:
        raise DataError(f"{mapping_file}: {len(missing)} sample(s) of the manifest, e.g. {missing[0]}, are"
                        " not in the private mapping (written by another ingest run or key):"
                        " rerun ingest (snakemake --forcerun ingest)")
    out = public.copy()
    out["source"] = [real[s] for s in public.sample_id.astype(str)]
    return out


def read_mapping(path: str | os.PathLike) -> pd.DataFrame:
    """The private mapping written by ingest.

    Args:
        path: the mapping CSV.

    Returns:
        The mapping, every column a string (:data:`MAPPING_COLUMNS`).

    Raises:
        DataError: it is missing (rerun ingest).
    """
    try:
        import pandas as pd

        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: the private ID mapping is missing (privacy.mapping_dir); it is written"
                        " by ingest: rerun ingest (snakemake --forcerun ingest)") from None
