-- the tmon store schema, version 1, frozen for the upgrade tests
CREATE TABLE tmon_points (
	series_id INTEGER NOT NULL, 
	step BIGINT NOT NULL, 
	seq BIGINT NOT NULL, 
	value FLOAT(53), 
	wall_time FLOAT(53) NOT NULL, 
	PRIMARY KEY (series_id, step, seq)
);

CREATE TABLE tmon_runs (
	id VARCHAR(32) NOT NULL, 
	name VARCHAR(250) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	framework VARCHAR(64), 
	created_at FLOAT NOT NULL, 
	ended_at FLOAT, 
	heartbeat_at FLOAT, 
	heartbeat_timeout FLOAT NOT NULL, 
	host VARCHAR(250), 
	pid INTEGER, 
	last_step BIGINT, 
	total_steps BIGINT, 
	config TEXT, 
	error TEXT, 
	dropped_points BIGINT NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_tmon_runs_created_at ON tmon_runs (created_at);

CREATE TABLE tmon_schema (
	id SERIAL NOT NULL, 
	version INTEGER NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE tmon_summaries (
	series_id INTEGER NOT NULL, 
	level INTEGER NOT NULL, 
	bucket BIGINT NOT NULL, 
	n BIGINT NOT NULL, 
	n_nan BIGINT NOT NULL, 
	min_value FLOAT(53), 
	min_step BIGINT, 
	min_wall FLOAT(53), 
	max_value FLOAT(53), 
	max_step BIGINT, 
	max_wall FLOAT(53), 
	PRIMARY KEY (series_id, level, bucket)
);

CREATE TABLE tmon_checkpoints (
	id SERIAL NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	wall_time FLOAT(53) NOT NULL, 
	step BIGINT, 
	epoch FLOAT, 
	path TEXT NOT NULL, 
	size_bytes BIGINT, 
	monitor VARCHAR(250), 
	monitor_value FLOAT(53), 
	source VARCHAR(64), 
	description TEXT, 
	tags TEXT, 
	deleted BOOLEAN NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES tmon_runs (id) ON DELETE CASCADE
);

CREATE INDEX ix_tmon_checkpoints_run_step ON tmon_checkpoints (run_id, step);

CREATE TABLE tmon_events (
	id SERIAL NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	wall_time FLOAT(53) NOT NULL, 
	step BIGINT, 
	type VARCHAR(64) NOT NULL, 
	message TEXT, 
	data TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES tmon_runs (id) ON DELETE CASCADE
);

CREATE INDEX ix_tmon_events_run_time ON tmon_events (run_id, wall_time);

CREATE TABLE tmon_gpu_samples (
	id SERIAL NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	wall_time FLOAT(53) NOT NULL, 
	host VARCHAR(250), 
	node_rank INTEGER NOT NULL, 
	gpu INTEGER NOT NULL, 
	name VARCHAR(250), 
	mem_used BIGINT, 
	mem_total BIGINT, 
	util_percent FLOAT, 
	power_watts FLOAT, 
	temperature_c FLOAT, 
	torch_allocated BIGINT, 
	torch_reserved BIGINT, 
	torch_max_allocated BIGINT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES tmon_runs (id) ON DELETE CASCADE
);

CREATE INDEX ix_tmon_gpu_samples_run_time ON tmon_gpu_samples (run_id, wall_time);

CREATE TABLE tmon_logs (
	id SERIAL NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	wall_time FLOAT(53) NOT NULL, 
	step BIGINT, 
	level VARCHAR(16) NOT NULL, 
	logger VARCHAR(250), 
	message TEXT NOT NULL, 
	source VARCHAR(32), 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES tmon_runs (id) ON DELETE CASCADE
);

CREATE INDEX ix_tmon_logs_run_time ON tmon_logs (run_id, wall_time);

CREATE TABLE tmon_reports (
	id SERIAL NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	created_at FLOAT(53) NOT NULL, 
	health VARCHAR(16) NOT NULL, 
	body TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES tmon_runs (id) ON DELETE CASCADE
);

CREATE TABLE tmon_requests (
	id SERIAL NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	payload TEXT, 
	status VARCHAR(16) NOT NULL, 
	requested_by VARCHAR(250), 
	requested_at FLOAT(53) NOT NULL, 
	applied_at FLOAT(53), 
	applied_step BIGINT, 
	old_value TEXT, 
	new_value TEXT, 
	reason TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES tmon_runs (id) ON DELETE CASCADE
);

CREATE INDEX ix_tmon_requests_run_status ON tmon_requests (run_id, status);

CREATE TABLE tmon_samples (
	id SERIAL NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	wall_time FLOAT(53) NOT NULL, 
	host VARCHAR(250), 
	node_rank INTEGER NOT NULL, 
	step BIGINT, 
	cpu_percent FLOAT, 
	ram_total BIGINT, 
	ram_used BIGINT, 
	ram_available BIGINT, 
	swap_used BIGINT, 
	proc_rss BIGINT, 
	children_rss BIGINT, 
	children_count INTEGER, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES tmon_runs (id) ON DELETE CASCADE
);

CREATE INDEX ix_tmon_samples_run_time ON tmon_samples (run_id, wall_time);

CREATE TABLE tmon_series (
	id SERIAL NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	key VARCHAR(250) NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES tmon_runs (id) ON DELETE CASCADE
);

CREATE UNIQUE INDEX ux_tmon_series_run_key ON tmon_series (run_id, key);
