"""Ray job entrypoint for pipeline steps (KubeRay RayJobs, ``ray job submit``):

    python jobs/pipeline.py --config jobs/configs/tiny.yaml --only units,corpus

runs those steps on the Ray cluster the job runs on, skipping steps whose outputs exist, and
records them in ``<run_dir>/pipeline.json``. The whole pipeline from a laptop is
``opens2s pipeline --config ...`` (add ``--address`` to submit each step as a job).
"""

import sys

from opens2s.pipeline.job import main

if __name__ == "__main__":
    sys.exit(main())
