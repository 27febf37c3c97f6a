import time

from runner import shared_task


@shared_task(bind=True)
def build_report(self, pages, delay=0.05):
    """Reports PROGRESS after each page: a web page polls AsyncResult(id).state / .info."""
    for page in range(1, pages + 1):
        time.sleep(delay)
        self.update_state(state="PROGRESS", meta={"done": page, "total": pages})
    return {"pages": pages}
