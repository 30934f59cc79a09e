-- revision 0004
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

CREATE TABLE bases (
	id INTEGER NOT NULL, 
	source TEXT NOT NULL, 
	revision VARCHAR(255), 
	weights_sha256 VARCHAR(64) NOT NULL, 
	structure_sha256 VARCHAR(64) NOT NULL, 
	family JSON NOT NULL, 
	created_at DATETIME NOT NULL, tensors_sha256 VARCHAR(64), 
	CONSTRAINT pk_bases PRIMARY KEY (id), 
	CONSTRAINT uq_bases_weights_sha256 UNIQUE (weights_sha256)
);

CREATE TABLE patches (
	id INTEGER NOT NULL, 
	namespace VARCHAR(96) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	created_at DATETIME NOT NULL, 
	CONSTRAINT pk_patches PRIMARY KEY (id), 
	CONSTRAINT uq_patches_name UNIQUE (name)
);

CREATE TABLE base_lineage (
	id INTEGER NOT NULL, 
	child_id INTEGER NOT NULL, 
	parent_id INTEGER NOT NULL, 
	relation VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	CONSTRAINT pk_base_lineage PRIMARY KEY (id), 
	CONSTRAINT ck_base_lineage_not_self CHECK (child_id <> parent_id), 
	CONSTRAINT fk_base_lineage_child_id_bases FOREIGN KEY(child_id) REFERENCES bases (id) ON DELETE CASCADE, 
	CONSTRAINT fk_base_lineage_parent_id_bases FOREIGN KEY(parent_id) REFERENCES bases (id) ON DELETE CASCADE, 
	CONSTRAINT uq_base_lineage_child_id_parent_id UNIQUE (child_id, parent_id)
);

CREATE TABLE versions (
	id INTEGER NOT NULL, 
	patch_id INTEGER NOT NULL, 
	version VARCHAR(64) NOT NULL, 
	sort_key VARCHAR(255) NOT NULL, 
	content_digest VARCHAR(64) NOT NULL, 
	manifest_sha256 VARCHAR(64) NOT NULL, 
	manifest JSON NOT NULL, 
	task TEXT NOT NULL, 
	source_weights_sha256 VARCHAR(64) NOT NULL, 
	yanked BOOLEAN NOT NULL, 
	yank_reason TEXT, 
	created_at DATETIME NOT NULL, 
	CONSTRAINT pk_versions PRIMARY KEY (id), 
	CONSTRAINT fk_versions_patch_id_patches FOREIGN KEY(patch_id) REFERENCES patches (id) ON DELETE CASCADE, 
	CONSTRAINT uq_versions_patch_id_sort_key UNIQUE (patch_id, sort_key)
);

CREATE TABLE aliases (
	id INTEGER NOT NULL, 
	patch_id INTEGER NOT NULL, 
	alias VARCHAR(64) NOT NULL, 
	version_id INTEGER NOT NULL, 
	updated_at DATETIME NOT NULL, validated_base_sha256 VARCHAR(64), validation_id INTEGER, 
	CONSTRAINT pk_aliases PRIMARY KEY (id), 
	CONSTRAINT fk_aliases_patch_id_patches FOREIGN KEY(patch_id) REFERENCES patches (id) ON DELETE CASCADE, 
	CONSTRAINT fk_aliases_version_id_versions FOREIGN KEY(version_id) REFERENCES versions (id) ON DELETE CASCADE, 
	CONSTRAINT uq_aliases_patch_id_alias UNIQUE (patch_id, alias)
);

CREATE TABLE files (
	id INTEGER NOT NULL, 
	version_id INTEGER NOT NULL, 
	path VARCHAR(1024) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	size BIGINT NOT NULL, 
	CONSTRAINT pk_files PRIMARY KEY (id), 
	CONSTRAINT ck_files_size_nonnegative CHECK (size >= 0), 
	CONSTRAINT fk_files_version_id_versions FOREIGN KEY(version_id) REFERENCES versions (id) ON DELETE CASCADE, 
	CONSTRAINT uq_files_version_id_path UNIQUE (version_id, path)
);

CREATE TABLE compat_reports (
	id INTEGER NOT NULL, 
	version_id INTEGER NOT NULL, 
	base_weights_sha256 VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	report JSON NOT NULL, 
	tool_version VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	CONSTRAINT pk_compat_reports PRIMARY KEY (id), 
	CONSTRAINT fk_compat_reports_version_id_versions FOREIGN KEY(version_id) REFERENCES versions (id) ON DELETE CASCADE
);

CREATE TABLE version_remotes (
	id INTEGER NOT NULL, 
	version_id INTEGER NOT NULL, 
	url VARCHAR(1024) NOT NULL, 
	revision VARCHAR(255), 
	pushed_at DATETIME NOT NULL, 
	CONSTRAINT pk_version_remotes PRIMARY KEY (id), 
	CONSTRAINT fk_version_remotes_version_id_versions FOREIGN KEY(version_id) REFERENCES versions (id) ON DELETE CASCADE, 
	CONSTRAINT uq_version_remotes_version_id_url UNIQUE (version_id, url)
);

CREATE TABLE installs (
	id INTEGER NOT NULL, 
	version_id INTEGER NOT NULL, 
	base_weights_sha256 VARCHAR(64) NOT NULL, 
	out_path TEXT NOT NULL, 
	format VARCHAR(16) NOT NULL, 
	forced BOOLEAN NOT NULL, 
	report_id INTEGER, 
	created_at DATETIME NOT NULL, decision JSON, 
	CONSTRAINT pk_installs PRIMARY KEY (id), 
	CONSTRAINT fk_installs_report_id_compat_reports FOREIGN KEY(report_id) REFERENCES compat_reports (id) ON DELETE SET NULL, 
	CONSTRAINT fk_installs_version_id_versions FOREIGN KEY(version_id) REFERENCES versions (id) ON DELETE CASCADE
);

CREATE TABLE "validations" (
	id INTEGER NOT NULL, 
	version_id INTEGER NOT NULL, 
	base_weights_sha256 VARCHAR(64) NOT NULL, 
	scores JSON NOT NULL, 
	verdict VARCHAR(16) NOT NULL, 
	thresholds JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	base_ref TEXT, 
	"limit" INTEGER, 
	lm_eval_version VARCHAR(64), 
	tool_version VARCHAR(64), 
	duration_s FLOAT, 
	check_status VARCHAR(16), 
	forced BOOLEAN DEFAULT '0' NOT NULL, 
	CONSTRAINT pk_validations PRIMARY KEY (id), 
	CONSTRAINT fk_validations_version_id_versions FOREIGN KEY(version_id) REFERENCES versions (id) ON DELETE CASCADE
);

CREATE INDEX ix_bases_structure_sha256 ON bases (structure_sha256);

CREATE INDEX ix_patches_namespace ON patches (namespace);

CREATE INDEX ix_base_lineage_child_id ON base_lineage (child_id);

CREATE INDEX ix_base_lineage_parent_id ON base_lineage (parent_id);

CREATE INDEX ix_versions_patch_id ON versions (patch_id);

CREATE INDEX ix_versions_source_weights_sha256 ON versions (source_weights_sha256);

CREATE INDEX ix_aliases_version_id ON aliases (version_id);

CREATE INDEX ix_files_sha256 ON files (sha256);

CREATE INDEX ix_files_version_id ON files (version_id);

CREATE INDEX ix_compat_reports_base_weights_sha256 ON compat_reports (base_weights_sha256);

CREATE INDEX ix_compat_reports_version_id ON compat_reports (version_id);

CREATE INDEX ix_installs_base_weights_sha256 ON installs (base_weights_sha256);

CREATE INDEX ix_installs_version_id ON installs (version_id);

CREATE INDEX ix_validations_base_weights_sha256 ON validations (base_weights_sha256);

CREATE INDEX ix_validations_version_id ON validations (version_id);

CREATE INDEX ix_versions_listing ON versions (patch_id, yanked, sort_key);

CREATE INDEX ix_compat_reports_version_id_base_weights_sha256_id ON compat_reports (version_id, base_weights_sha256, id);

CREATE INDEX ix_validations_version_id_base_weights_sha256 ON validations (version_id, base_weights_sha256);

CREATE INDEX ix_bases_tensors_sha256 ON bases (tensors_sha256);

