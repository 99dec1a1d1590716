"""Apache Airflow provider for VMware vCenter Server Appliance file-based backup jobs.

Imports nothing heavy: DAG files import this package at parse time.
"""

__version__ = "0.1.0"
