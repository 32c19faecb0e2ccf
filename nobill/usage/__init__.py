"""Usage metering: ingestion with exact deduplication, aggregation into totals per billing period."""
