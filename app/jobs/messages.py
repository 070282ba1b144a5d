"""What a job says it is doing: its message, stored in English (the JSON API and the logs send
it so) and shown on the admin pages in the reader's language.

Each message is one of the ids below, filled in with `%` where it names values (epochs,
versions, folds). A page reads a stored message back against these ids, most specific first,
and shows the matching id translated with the same values; a message none of them match (an
exception's text after "failed: ") keeps its values as they are.
"""

from __future__ import annotations

from app.i18n import N_, gettext, read_back

# The statuses (app.tables.JobStatus), shown as labels too; a finished job without a message
# of its own has its status as message.
QUEUED = N_("queued")
RUNNING = N_("running")
SUCCEEDED = N_("succeeded")
FAILED_STATUS = N_("failed")
CANCELLED = N_("cancelled")
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED_STATUS, CANCELLED)

STARTED = N_("started")
CANCELLING = N_("cancelling at the next progress point")
CANCELLED_WORKER_LOST = N_("cancelled (its worker stopped answering)")
FAILED_WORKER_LOST = N_("failed: worker lost")
FAILED = N_("failed: %(error)s")
REQUEUED_WORKER_LOST = N_("requeued: the worker holding it stopped answering")
REQUEUED_WORKER_STOPPED = N_("requeued: the worker holding it was stopped")

IMPORTING_LIDC = N_("importing the LIDC-IDRI annotations (once)")
LOADING_ENCODER = N_("loading the text encoder")
EPOCH = N_("epoch %(epoch)s/%(epochs)s, batch %(batch)s/%(batches)s, loss %(loss)s")
REGISTERED = N_("registered %(version)s")
REGISTERED_ACTIVE = N_("registered %(version)s (active)")
WAITING_FOR_FOLDS = N_("waiting for %(folds)s fold jobs")
WAITING_FOR_SOME_FOLDS = N_("waiting for %(left)s of %(folds)s fold jobs")
MERGING_FOLDS = N_("merging the folds and drawing the figures")
REPORT_WRITTEN = N_("report of %(folds)s folds written")
IN_FOLD = N_("fold %(fold)s/%(folds)s: %(doing)s")  # `doing` is itself one of these messages
FOLD_DONE = N_("fold %(fold)s/%(folds)s done")
REBUILDING_CATALOG = N_("rebuilding the catalog of %(version)s from %(origin)s")
CATALOG_UNCHANGED = N_("no new corrected cases; catalog unchanged")
SAVING_CATALOG = N_("saving the new catalog")
CATALOG_SWAPPED = N_("catalog %(previous)s -> %(catalog)s")

# The stages model/ names as they happen (model.recipe's after training, model.evaluate's
# within a fold); shown after "fold i/n: " or on their own.
STAGES = (
    N_("scoring the validation patients"),
    N_("building the catalog and the case index"),
    N_("train"),
    N_("predict"),
    N_("baselines"),
)

MESSAGES = (
    *STATUSES,
    STARTED,
    CANCELLING,
    CANCELLED_WORKER_LOST,
    FAILED_WORKER_LOST,
    REQUEUED_WORKER_LOST,
    REQUEUED_WORKER_STOPPED,
    IMPORTING_LIDC,
    LOADING_ENCODER,
    MERGING_FOLDS,
    CATALOG_UNCHANGED,
    SAVING_CATALOG,
    *STAGES,
    EPOCH,
    REGISTERED_ACTIVE,  # before REGISTERED, which would take "v1 (active)" as its version
    REGISTERED,
    WAITING_FOR_SOME_FOLDS,
    WAITING_FOR_FOLDS,
    REPORT_WRITTEN,
    FOLD_DONE,
    IN_FOLD,
    REBUILDING_CATALOG,
    CATALOG_SWAPPED,
    FAILED,  # last: any text after "failed: "
)
NESTED = {"doing"}  # placeholders whose value is itself a job message


def shown_job_message(text: str | None) -> str:
    """A stored job message in the reader's language (as it is where none of ours matches)."""
    if not text:
        return ""
    found = read_back(text, MESSAGES)
    if found is None:
        return text
    message, values = found
    if not values:
        return gettext(message)
    shown = {name: shown_job_message(v) if name in NESTED else v for name, v in values.items()}
    return gettext(message) % shown
