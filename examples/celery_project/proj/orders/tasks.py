from runner import Task, shared_task
from runner.exceptions import Reject


class DatabaseTask(Task):
    """A base class sharing a connection between the runs of a task in one worker process."""

    _db = None

    @property
    def db(self):
        if self._db is None:
            self._db = {"orders": []}  # stands for a real connection
        return self._db

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        print(f"order task {task_id} failed: {exc!r}")


@shared_task(base=DatabaseTask, bind=True)
def place_order(self, item, quantity):
    if quantity <= 0:
        raise ValueError(f"cannot order {quantity} of {item}")
    self.db["orders"].append((item, quantity))
    return {"item": item, "quantity": quantity, "order_no": len(self.db["orders"])}


@shared_task(autoretry_for=(ConnectionError,), retry_backoff=0.1, retry_jitter=False,
             max_retries=3, bind=True)
def charge(self, amount):
    if self.request.retries < 2:
        raise ConnectionError("payment service busy")
    return {"charged": amount, "attempts": self.request.retries + 1}


@shared_task
def cancel(order_no):
    if order_no < 0:
        raise Reject("no such order", requeue=False)
    return f"cancelled {order_no}"


@shared_task
def heartbeat():
    return "alive"
