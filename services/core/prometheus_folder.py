"""`bentoml`, with its Prometheus multiprocess folder taken from PROMETHEUS_MULTIPROC_DIR:

    PROMETHEUS_MULTIPROC_DIR=/var/lib/modelport/prometheus/plate-reader \\
        python -m services.core.prometheus_folder serve services.plate_reader.service:PlateReader

BentoML (1.4.39) ignores PROMETHEUS_MULTIPROC_DIR: every `bentoml serve` uses
`$BENTOML_HOME/prometheus_multiproc_dir` and empties it at start. Two services started from one
home (as `modelport serve` did) then shared one folder: each /metrics showed the other's series
and lost its own (issue 20). `modelport serve` (local_stack.py) runs each service through this,
each with a folder of its own. It still empties that folder at start, as it should: the files
there are from a run that is over.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    # Out of this process's environment: here (the arbiter, which imports the service to read
    # its config) metrics stay in memory, as under plain `bentoml serve`; BentoML hands the
    # folder to its workers once it has emptied it.
    folder = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if folder:
        from bentoml._internal.configuration.containers import BentoMLContainer

        BentoMLContainer.prometheus_multiproc_dir.set(folder)  # as bentoml's own pytest plugin does
    from bentoml_cli.cli import cli

    return cli()


if __name__ == "__main__":
    sys.exit(main())
