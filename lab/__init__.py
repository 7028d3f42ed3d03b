"""The lab: datasets, metrics, evaluation, fine-tuning and their reports.

It imports the product (rag, ingest) and measures it; the product never imports the lab
(.importlinter checks this). Its command lines: ``python -m lab.evaluate``,
``python -m lab.finetune``, ``python -m lab.followup_eval``, ``python -m lab.evidence_eval``.
"""
