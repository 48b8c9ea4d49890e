"""Old import path of the public DICOM reader (the module lives in :mod:`oncorobust.data.dicom`)::

    from oncorobust.dicom import read_dicom
"""

from oncorobust.data.dicom import DicomError, read_dicom

__all__ = ["DicomError", "read_dicom"]
