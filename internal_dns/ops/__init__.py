"""Operations: what an operator sees and runs beside the answers.

Metrics exposition and the HTTP listener (`metrics`, `http`: numbers each part hands over, read at
scrape time), the query log, the `workers:` supervisor, collector pauses (`gcwatch`), the
allocator's setting (`malloc`) and systemd's notify protocol (`systemd`). May import the DNS
vocabulary and `config`; never the parts it reports on, the transports or the service.
"""
