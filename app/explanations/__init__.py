"""Explanations: explaining uploaded features and storing the answer (service), reading the
upload (upload, json_body, identity), batches, how a stored one is shown (views, drawing), and
its exports (fhir, dicom_sr)."""
