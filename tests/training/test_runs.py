import concurrent.futures
import datetime

from tftransfer.training.runs import claim_run_dir, default_run_dir


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    wanted = default_run_dir("photos/", datetime.datetime(2026, 1, 2, 3, 4, 5), root=tmp_path)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        claimed = list(pool.map(lambda _: claim_run_dir(wanted), range(6)))
    assert len(set(claimed)) == 6 and all(path.is_dir() for path in claimed)
    assert wanted in claimed and sorted(p.name for p in claimed)[:2] == [
        "20260102-030405-photos", "20260102-030405-photos-2"]
