"""Entry point for Ray job submission: the arguments are those of `raydsconv convert`.

    ray job submit --address http://HEAD:8265 --working-dir jobs \
        --runtime-env-json '{"pip": ["raydsconv"]}' -- python convert.py SRC DST --shape 224 224

Inside a job RAY_ADDRESS is set, so the conversion runs on that cluster (no embedded Ray). Give
SRC and DST as absolute paths on the filesystem every node shares. Drop the "pip" entry when the
cluster's Python already has raydsconv installed. The exit code is the job's status.
"""

import sys

from raydsconv.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
