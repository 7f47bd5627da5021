"""PssAwsHook: the `aws_default` connection (endpoint_url included) as pss_ops' S3 filesystem and worker environment."""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook


class PssAwsHook(AwsBaseHook):
    """Hands the Airflow AWS connection to pss_ops: an S3 filesystem for manifests, env for `pss step` workers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("client_type", "s3")
        super().__init__(*args, **kwargs)

    def configure_storage(self) -> None:
        """Make pss_ops' URI layer use this connection's endpoint, region and credentials for s3:// URIs."""
        from pss_ops import storage

        # Resolved as step_environment resolves them for workers (role_arn and profiles included), then handed to pyarrow.
        credentials = self.get_credentials()
        storage.set_s3_filesystem(
            storage.s3_filesystem(
                endpoint_url=self.conn_config.endpoint_url,
                region=self.conn_region_name,
                access_key=credentials.access_key,
                secret_key=credentials.secret_key,
                session_token=credentials.token,
            )
        )

    def step_environment(self) -> dict[str, str]:
        """Environment for a local `pss step` process so its boto3 clients use this connection."""
        credentials = self.get_credentials()
        env = {
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
        }
        if credentials.token:
            env["AWS_SESSION_TOKEN"] = credentials.token
        if self.conn_region_name:
            env["AWS_DEFAULT_REGION"] = self.conn_region_name
        endpoint = self.conn_config.endpoint_url
        if endpoint:
            # boto3 reads AWS_ENDPOINT_URL for every service, as the connection's endpoint_url does.
            env["AWS_ENDPOINT_URL"] = endpoint
        return env
