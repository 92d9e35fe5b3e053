"""The default job's search for 100 episodes (25 warm-up), alternately with `--proxy plain`,
`fast`, and `fast` scoring its val batches one after another (threads=1), twice each in one
process; each search's wall time, one evaluation timed after it, and the rest
(docs/benchmarks.md "The proxy evaluation").

    python docs/studies/search_proxy_paths.py
"""

from __future__ import annotations

import time

from rlprune.agent.config import SearchConfig
from rlprune.service.jobs.dense_loader import load_dense
from rlprune.service.jobs.lifecycle import JobRunner
from rlprune.service.jobs.measure import run_times

EPISODES = 100


def main() -> None:
    for proxy, threads in [("plain", None), ("fast", 2), ("fast", 1)] * 2:
        config = SearchConfig(episodes=EPISODES, warmup=25, proxy=proxy)
        runner = JobRunner(config, load_dense(config), "ddpg")
        if threads:
            runner.env._fast.evaluator.threads = threads
        start = time.perf_counter()
        runner.search.run()
        search = time.perf_counter() - start
        evaluation = sum(run_times(runner.env.proxy_score, warmup=0, repeats=10)) / 10
        print(f"{proxy} (threads {threads}): search {search:.1f} s, one evaluation "
              f"{1000 * evaluation:.1f} ms, the rest {search - EPISODES * evaluation:.1f} s",
              flush=True)


if __name__ == "__main__":
    main()
