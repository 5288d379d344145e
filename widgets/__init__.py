"""Notebook views over the core (installed as ``llmos_lab.widgets``).

Imports flow one way: these modules import ``llmos_lab``; the core never imports them. The views
(AllocationView, SchedulerView, TrainingDashboard, ReportView, KernelMonitor) arrive with the
widgets issue; this package exists now so the install mapping is exercised from day one.
"""
