"""Thin adapters, one per report section: each runs its section through today's public commands and
library functions and returns measured values, figures and notes for the report (see
:class:`rdfia_jax.reproduce.runner.SectionContext` and :func:`rdfia_jax.reproduce.runner.run_section`)."""
