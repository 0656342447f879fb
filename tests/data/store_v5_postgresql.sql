-- a tmon store at schema 5 written by tmon, dumped by pg_dump: see make_store_v5.py
--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: tmon_alert_claims; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_alert_claims (
    id integer NOT NULL,
    run_id character varying(32) NOT NULL,
    key character varying(200) NOT NULL,
    uid character varying(32),
    claimed_at double precision NOT NULL,
    watcher character varying(250)
);


--
-- Name: tmon_alert_claims_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_alert_claims_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_alert_claims_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_alert_claims_id_seq OWNED BY public.tmon_alert_claims.id;


--
-- Name: tmon_checkpoints; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_checkpoints (
    id integer NOT NULL,
    run_id character varying(32) NOT NULL,
    wall_time double precision NOT NULL,
    step bigint,
    epoch double precision,
    path text NOT NULL,
    size_bytes bigint,
    monitor character varying(250),
    monitor_value double precision,
    source character varying(64),
    description text,
    tags text,
    deleted boolean NOT NULL
);


--
-- Name: tmon_checkpoints_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_checkpoints_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_checkpoints_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_checkpoints_id_seq OWNED BY public.tmon_checkpoints.id;


--
-- Name: tmon_chunks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_chunks (
    id integer NOT NULL,
    series_id integer NOT NULL,
    n integer NOT NULL,
    first_step bigint NOT NULL,
    last_step bigint NOT NULL,
    first_wall double precision NOT NULL,
    last_wall double precision NOT NULL,
    steps bytea NOT NULL,
    vals bytea NOT NULL,
    walls bytea NOT NULL
);


--
-- Name: tmon_chunks_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_chunks_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_chunks_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_chunks_id_seq OWNED BY public.tmon_chunks.id;


--
-- Name: tmon_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_events (
    id integer NOT NULL,
    run_id character varying(32) NOT NULL,
    wall_time double precision NOT NULL,
    step bigint,
    type character varying(64) NOT NULL,
    message text,
    data text
);


--
-- Name: tmon_events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_events_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_events_id_seq OWNED BY public.tmon_events.id;


--
-- Name: tmon_gpu_samples; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_gpu_samples (
    id integer NOT NULL,
    run_id character varying(32) NOT NULL,
    wall_time double precision NOT NULL,
    host character varying(250),
    node_rank integer NOT NULL,
    gpu integer NOT NULL,
    name character varying(250),
    mem_used bigint,
    mem_total bigint,
    util_percent double precision,
    power_watts double precision,
    temperature_c double precision,
    torch_allocated bigint,
    torch_reserved bigint,
    torch_max_allocated bigint
);


--
-- Name: tmon_gpu_samples_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_gpu_samples_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_gpu_samples_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_gpu_samples_id_seq OWNED BY public.tmon_gpu_samples.id;


--
-- Name: tmon_logs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_logs (
    id integer NOT NULL,
    run_id character varying(32) NOT NULL,
    wall_time double precision NOT NULL,
    step bigint,
    level character varying(16) NOT NULL,
    logger character varying(250),
    message text NOT NULL,
    source character varying(32)
);


--
-- Name: tmon_logs_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_logs_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_logs_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_logs_id_seq OWNED BY public.tmon_logs.id;


--
-- Name: tmon_reports; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_reports (
    id integer NOT NULL,
    run_id character varying(32) NOT NULL,
    created_at double precision NOT NULL,
    health character varying(16) NOT NULL,
    body text NOT NULL
);


--
-- Name: tmon_reports_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_reports_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_reports_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_reports_id_seq OWNED BY public.tmon_reports.id;


--
-- Name: tmon_requests; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_requests (
    id integer NOT NULL,
    run_id character varying(32) NOT NULL,
    kind character varying(32) NOT NULL,
    payload text,
    status character varying(16) NOT NULL,
    requested_by character varying(250),
    requested_at double precision NOT NULL,
    applied_at double precision,
    applied_step bigint,
    old_value text,
    new_value text,
    reason text
);


--
-- Name: tmon_requests_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_requests_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_requests_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_requests_id_seq OWNED BY public.tmon_requests.id;


--
-- Name: tmon_runs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_runs (
    id character varying(32) NOT NULL,
    name character varying(250) NOT NULL,
    status character varying(16) NOT NULL,
    framework character varying(64),
    created_at double precision NOT NULL,
    ended_at double precision,
    heartbeat_at double precision,
    heartbeat_timeout double precision NOT NULL,
    host character varying(250),
    pid integer,
    last_step bigint,
    total_steps bigint,
    config text,
    error text,
    dropped_points bigint NOT NULL,
    tags text,
    notes text
);


--
-- Name: tmon_samples; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_samples (
    id integer NOT NULL,
    run_id character varying(32) NOT NULL,
    wall_time double precision NOT NULL,
    host character varying(250),
    node_rank integer NOT NULL,
    step bigint,
    cpu_percent double precision,
    ram_total bigint,
    ram_used bigint,
    ram_available bigint,
    swap_used bigint,
    proc_rss bigint,
    children_rss bigint,
    children_count integer
);


--
-- Name: tmon_samples_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_samples_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_samples_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_samples_id_seq OWNED BY public.tmon_samples.id;


--
-- Name: tmon_schema; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_schema (
    id integer NOT NULL,
    version integer NOT NULL,
    created_at double precision NOT NULL
);


--
-- Name: tmon_schema_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_schema_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_schema_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_schema_id_seq OWNED BY public.tmon_schema.id;


--
-- Name: tmon_series; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_series (
    id integer NOT NULL,
    run_id character varying(32) NOT NULL,
    key character varying(250) NOT NULL,
    summarized_chunk bigint DEFAULT '0'::bigint NOT NULL
);


--
-- Name: tmon_series_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.tmon_series_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: tmon_series_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.tmon_series_id_seq OWNED BY public.tmon_series.id;


--
-- Name: tmon_summaries; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tmon_summaries (
    series_id integer NOT NULL,
    level integer NOT NULL,
    bucket bigint NOT NULL,
    n bigint NOT NULL,
    n_nan bigint NOT NULL,
    min_value double precision,
    min_step bigint,
    min_wall double precision,
    max_value double precision,
    max_step bigint,
    max_wall double precision
);


--
-- Name: tmon_alert_claims id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_alert_claims ALTER COLUMN id SET DEFAULT nextval('public.tmon_alert_claims_id_seq'::regclass);


--
-- Name: tmon_checkpoints id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_checkpoints ALTER COLUMN id SET DEFAULT nextval('public.tmon_checkpoints_id_seq'::regclass);


--
-- Name: tmon_chunks id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_chunks ALTER COLUMN id SET DEFAULT nextval('public.tmon_chunks_id_seq'::regclass);


--
-- Name: tmon_events id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_events ALTER COLUMN id SET DEFAULT nextval('public.tmon_events_id_seq'::regclass);


--
-- Name: tmon_gpu_samples id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_gpu_samples ALTER COLUMN id SET DEFAULT nextval('public.tmon_gpu_samples_id_seq'::regclass);


--
-- Name: tmon_logs id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_logs ALTER COLUMN id SET DEFAULT nextval('public.tmon_logs_id_seq'::regclass);


--
-- Name: tmon_reports id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_reports ALTER COLUMN id SET DEFAULT nextval('public.tmon_reports_id_seq'::regclass);


--
-- Name: tmon_requests id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_requests ALTER COLUMN id SET DEFAULT nextval('public.tmon_requests_id_seq'::regclass);


--
-- Name: tmon_samples id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_samples ALTER COLUMN id SET DEFAULT nextval('public.tmon_samples_id_seq'::regclass);


--
-- Name: tmon_schema id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_schema ALTER COLUMN id SET DEFAULT nextval('public.tmon_schema_id_seq'::regclass);


--
-- Name: tmon_series id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_series ALTER COLUMN id SET DEFAULT nextval('public.tmon_series_id_seq'::regclass);


--
-- Data for Name: tmon_alert_claims; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: tmon_checkpoints; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: tmon_chunks; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.tmon_chunks VALUES (1, 1, 20, 0, 19, 1796226052.8335793, 1796226052.833684, '\x', '\x000000000000f03f000000000000e03f555555555555d53f000000000000d03f9a9999999999c93f555555555555c53f922449922449c23f000000000000f87f1cc7711cc771bc3f9a9999999999b93f46175d74d145b73f555555555555b53f143bb1133bb1b33f922449922449b23f111111111111b13f000000000000b03f1e1e1e1e1e1eae3f1cc7711cc771ac3f28afa1bc86f2aa3f9a9999999999a93f', '\x5d5935010fc4da416b5a35010fc4da417a5a35010fc4da41855a35010fc4da418c5a35010fc4da41935a35010fc4da419b5a35010fc4da41a85a35010fc4da41c75a35010fc4da41cd5a35010fc4da41d55a35010fc4da41db5a35010fc4da41e25a35010fc4da41ea5a35010fc4da41f25a35010fc4da41f95a35010fc4da41005b35010fc4da41065b35010fc4da410c5b35010fc4da41145b35010fc4da41');


--
-- Data for Name: tmon_events; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.tmon_events VALUES (1, '1036fc65b748', 1796226052.8336897, 19, 'train_end', NULL, '{"reason": "max_steps"}');


--
-- Data for Name: tmon_gpu_samples; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: tmon_logs; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: tmon_reports; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: tmon_requests; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: tmon_runs; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.tmon_runs VALUES ('1036fc65b748', 'from-v5', 'completed', 'lightning', 1796226052.1371853, 1796226052.8337388, 1796226052.8634658, 30, 'vm', 9087, 19, NULL, '{"hparams": {"lr": 0.01, "optimizer": "adam"}}', NULL, 0, '["old"]', 'written by schema 5');


--
-- Data for Name: tmon_samples; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: tmon_schema; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.tmon_schema VALUES (1, 5, 1796226052.795112);


--
-- Data for Name: tmon_series; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.tmon_series VALUES (1, '1036fc65b748', 'loss', 1);


--
-- Data for Name: tmon_summaries; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.tmon_summaries VALUES (1, 0, 0, 20, 1, 0.05, 19, 1796226052.833684, 1, 0, 1796226052.8335793);
INSERT INTO public.tmon_summaries VALUES (1, 1, 0, 20, 1, 0.05, 19, 1796226052.833684, 1, 0, 1796226052.8335793);
INSERT INTO public.tmon_summaries VALUES (1, 2, 0, 20, 1, 0.05, 19, 1796226052.833684, 1, 0, 1796226052.8335793);
INSERT INTO public.tmon_summaries VALUES (1, 3, 0, 20, 1, 0.05, 19, 1796226052.833684, 1, 0, 1796226052.8335793);
INSERT INTO public.tmon_summaries VALUES (1, 4, 0, 20, 1, 0.05, 19, 1796226052.833684, 1, 0, 1796226052.8335793);
INSERT INTO public.tmon_summaries VALUES (1, 5, 0, 20, 1, 0.05, 19, 1796226052.833684, 1, 0, 1796226052.8335793);
INSERT INTO public.tmon_summaries VALUES (1, 6, 0, 20, 1, 0.05, 19, 1796226052.833684, 1, 0, 1796226052.8335793);
INSERT INTO public.tmon_summaries VALUES (1, 7, 0, 20, 1, 0.05, 19, 1796226052.833684, 1, 0, 1796226052.8335793);
INSERT INTO public.tmon_summaries VALUES (1, 8, 0, 20, 1, 0.05, 19, 1796226052.833684, 1, 0, 1796226052.8335793);


--
-- Name: tmon_alert_claims_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_alert_claims_id_seq', 1, false);


--
-- Name: tmon_checkpoints_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_checkpoints_id_seq', 1, false);


--
-- Name: tmon_chunks_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_chunks_id_seq', 1, true);


--
-- Name: tmon_events_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_events_id_seq', 1, true);


--
-- Name: tmon_gpu_samples_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_gpu_samples_id_seq', 1, false);


--
-- Name: tmon_logs_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_logs_id_seq', 1, false);


--
-- Name: tmon_reports_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_reports_id_seq', 1, false);


--
-- Name: tmon_requests_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_requests_id_seq', 1, false);


--
-- Name: tmon_samples_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_samples_id_seq', 1, false);


--
-- Name: tmon_schema_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_schema_id_seq', 1, true);


--
-- Name: tmon_series_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.tmon_series_id_seq', 1, true);


--
-- Name: tmon_alert_claims tmon_alert_claims_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_alert_claims
    ADD CONSTRAINT tmon_alert_claims_pkey PRIMARY KEY (id);


--
-- Name: tmon_checkpoints tmon_checkpoints_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_checkpoints
    ADD CONSTRAINT tmon_checkpoints_pkey PRIMARY KEY (id);


--
-- Name: tmon_chunks tmon_chunks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_chunks
    ADD CONSTRAINT tmon_chunks_pkey PRIMARY KEY (id);


--
-- Name: tmon_events tmon_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_events
    ADD CONSTRAINT tmon_events_pkey PRIMARY KEY (id);


--
-- Name: tmon_gpu_samples tmon_gpu_samples_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_gpu_samples
    ADD CONSTRAINT tmon_gpu_samples_pkey PRIMARY KEY (id);


--
-- Name: tmon_logs tmon_logs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_logs
    ADD CONSTRAINT tmon_logs_pkey PRIMARY KEY (id);


--
-- Name: tmon_reports tmon_reports_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_reports
    ADD CONSTRAINT tmon_reports_pkey PRIMARY KEY (id);


--
-- Name: tmon_requests tmon_requests_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_requests
    ADD CONSTRAINT tmon_requests_pkey PRIMARY KEY (id);


--
-- Name: tmon_runs tmon_runs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_runs
    ADD CONSTRAINT tmon_runs_pkey PRIMARY KEY (id);


--
-- Name: tmon_samples tmon_samples_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_samples
    ADD CONSTRAINT tmon_samples_pkey PRIMARY KEY (id);


--
-- Name: tmon_schema tmon_schema_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_schema
    ADD CONSTRAINT tmon_schema_pkey PRIMARY KEY (id);


--
-- Name: tmon_series tmon_series_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_series
    ADD CONSTRAINT tmon_series_pkey PRIMARY KEY (id);


--
-- Name: tmon_summaries tmon_summaries_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_summaries
    ADD CONSTRAINT tmon_summaries_pkey PRIMARY KEY (series_id, level, bucket);


--
-- Name: ix_tmon_checkpoints_run_step; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_tmon_checkpoints_run_step ON public.tmon_checkpoints USING btree (run_id, step);


--
-- Name: ix_tmon_chunks_series_steps; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_tmon_chunks_series_steps ON public.tmon_chunks USING btree (series_id, first_step, last_step);


--
-- Name: ix_tmon_events_run_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_tmon_events_run_time ON public.tmon_events USING btree (run_id, wall_time);


--
-- Name: ix_tmon_gpu_samples_run_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_tmon_gpu_samples_run_time ON public.tmon_gpu_samples USING btree (run_id, wall_time);


--
-- Name: ix_tmon_logs_run_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_tmon_logs_run_time ON public.tmon_logs USING btree (run_id, wall_time);


--
-- Name: ix_tmon_requests_run_status; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_tmon_requests_run_status ON public.tmon_requests USING btree (run_id, status);


--
-- Name: ix_tmon_runs_created_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_tmon_runs_created_at ON public.tmon_runs USING btree (created_at);


--
-- Name: ix_tmon_samples_run_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_tmon_samples_run_time ON public.tmon_samples USING btree (run_id, wall_time);


--
-- Name: ux_tmon_alert_claims_run_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX ux_tmon_alert_claims_run_key ON public.tmon_alert_claims USING btree (run_id, key);


--
-- Name: ux_tmon_series_run_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX ux_tmon_series_run_key ON public.tmon_series USING btree (run_id, key);


--
-- Name: tmon_alert_claims tmon_alert_claims_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_alert_claims
    ADD CONSTRAINT tmon_alert_claims_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.tmon_runs(id) ON DELETE CASCADE;


--
-- Name: tmon_checkpoints tmon_checkpoints_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_checkpoints
    ADD CONSTRAINT tmon_checkpoints_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.tmon_runs(id) ON DELETE CASCADE;


--
-- Name: tmon_events tmon_events_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_events
    ADD CONSTRAINT tmon_events_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.tmon_runs(id) ON DELETE CASCADE;


--
-- Name: tmon_gpu_samples tmon_gpu_samples_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_gpu_samples
    ADD CONSTRAINT tmon_gpu_samples_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.tmon_runs(id) ON DELETE CASCADE;


--
-- Name: tmon_logs tmon_logs_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_logs
    ADD CONSTRAINT tmon_logs_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.tmon_runs(id) ON DELETE CASCADE;


--
-- Name: tmon_reports tmon_reports_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_reports
    ADD CONSTRAINT tmon_reports_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.tmon_runs(id) ON DELETE CASCADE;


--
-- Name: tmon_requests tmon_requests_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_requests
    ADD CONSTRAINT tmon_requests_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.tmon_runs(id) ON DELETE CASCADE;


--
-- Name: tmon_samples tmon_samples_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_samples
    ADD CONSTRAINT tmon_samples_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.tmon_runs(id) ON DELETE CASCADE;


--
-- Name: tmon_series tmon_series_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tmon_series
    ADD CONSTRAINT tmon_series_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.tmon_runs(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--


