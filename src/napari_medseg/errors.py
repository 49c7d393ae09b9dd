"""Typed exceptions whose messages are written for the person at the keyboard."""

from __future__ import annotations


class MedsegError(Exception):
    """Base class of every error napari-medseg raises on purpose."""


class ReaderError(MedsegError, ValueError):
    """A file or folder could not be read; the message says why and what to do."""


class ModelError(MedsegError, ValueError):
    """A model could not be found, loaded or applied to the given input."""


class ParameterError(MedsegError, ValueError):
    """A parameter value is out of range or inconsistent with the input."""


class MedsegWarning(UserWarning):
    """Base class of the warnings napari-medseg gives on purpose (the CLI prints them as one line)."""


class ImageKindWarning(MedsegWarning):
    """A model runs on a kind of image its card says it was not made for (e.g. a microscopy model on MR)."""


class TrainingError(MedsegError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN or infinite); the message says what to change."""
