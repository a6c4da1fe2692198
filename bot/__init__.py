"""tablebot: validate CSV files and upload them to BigPanda and D·engage tables from Slack."""

__version__ = "0.1.0"
