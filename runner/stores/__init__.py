"""What brokers and result backends of one server share: connections, riding out outages,
and the low-level helpers under them (``sqlite``: files, WAL, write lock, change watcher;
``redis``: the client and retrying; ``amqp``: pika connections; ``amqp_writes``: frames
written at once; ``file_events``: inotify on a file). Below brokers and backends in the
import layers: it never imports them."""
