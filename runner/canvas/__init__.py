"""Canvas: signatures, chain, group, chord, chunks, xmap / xstarmap, stamping, with Celery's
semantics (see the modules: ``signature`` for how a canvas is sent, ``primitives`` for each
kind, ``flow`` for how the worker moves them forward)."""

from runner.canvas.builtins import BUILTIN_TASKS, register_builtins, replace_task
from runner.canvas.chord import chord
from runner.canvas.flow import CanvasMiddleware, apply_links_eagerly
from runner.canvas.maps import chunks, xmap, xstarmap
from runner.canvas.primitives import chain, group
from runner.canvas.signature import ChordError, Signature, maybe_signature, signature
from runner.canvas.stamping import StampingVisitor

subtask = signature  # Celery's old name

__all__ = ["BUILTIN_TASKS", "CanvasMiddleware", "ChordError", "Signature", "StampingVisitor",
           "apply_links_eagerly", "chain", "chord", "chunks", "group", "maybe_signature",
           "register_builtins", "replace_task", "signature", "subtask", "xmap", "xstarmap"]
