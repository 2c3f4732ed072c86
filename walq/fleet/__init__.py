"""Fleet mode: the Celery tasks' work as plain functions (no Celery here).

``runtime`` holds one worker process's clients, ``args`` validates task
arguments, ``stages`` is scan, sweep and the compress → encrypt → store →
commit stages, ``faults`` the test-only fault hook, ``queues`` what ``walq
status`` shows of the broker. Kept empty so ``walq status`` can read the
queues without importing the stages.
"""
