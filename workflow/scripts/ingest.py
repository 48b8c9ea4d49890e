"""Snakemake adapter: native-format source -> results/{ds}/manifest.csv + skipped.csv.

With privacy.pseudonymize_ids both carry pseudonyms only, the log is scrubbed, and the private
mapping (pseudonym -> real IDs and source paths) and the real skipped list are written under
privacy.mapping_dir (outside results/); the key comes from $ONCOROBUST_SALT or privacy.salt_file.
"""

import contextlib

from oncorobust.data.ingest import run_ingest
from oncorobust.errors import OncorobustError
from oncorobust.io import write_csv
from oncorobust.logs import step_logging
from oncorobust.data.privacy import Pseudonymizer, Scrubber, enabled, load_salt, protect_ingest, write_private_csv
from oncorobust.data.sources import ARRAY_FORMATS, source_root

sm = snakemake  # noqa: F821 (injected by snakemake)
private = enabled(sm.params.privacy)
with step_logging(sm.log[0], "ingest") as log:
    scrubber = Scrubber()
    pz = Pseudonymizer(load_salt(sm.params.privacy)) if private else None
    with scrubber.buffered() if private else contextlib.nullcontext():
        try:
            manifest, skipped = run_ingest(sm.params.source, sm.params.split, sm.params.seed, None,
                                           sm.params.on_bad_file, scrubber=scrubber, pseudonymizer=pz)
        except OncorobustError as exc:
            exc.private = private  # the skip list it carries goes to the log (by reason only if private)
            raise
        if private:
            fmt = sm.params.source["format"]
            root = None if fmt in ARRAY_FORMATS else source_root(sm.params.source)
            manifest, skipped, mapping, real_skipped = protect_ingest(manifest, skipped, pz, root, scrubber)
            write_private_csv(mapping, sm.output.private_mapping)
            write_private_csv(real_skipped, sm.output.private_skipped)
            log.info("pseudonymised %d samples; the private mapping is in privacy.mapping_dir", len(manifest))
    write_csv(skipped, sm.output.skipped)
    write_csv(manifest, sm.output.manifest)
