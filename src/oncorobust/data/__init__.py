"""Data stage: DICOM reading, dataset sources, ingest, preprocessing, pseudonymisation."""
