//! A service's job queue from its environment:
//!
//! | variable (`<SERVICE>_` or `PLATFORM_`) | default | |
//! |---|---|---|
//! | `JOBS_URL` | `in-process` | `amqp://user:pw@host:5672/%2f` for RabbitMQ |
//! | `JOBS_PREFIX` | `jobs.<service>` | names the RabbitMQ exchanges and queues |
//! | `JOBS_PUBLISH_TIMEOUT` | `5s` | how long an enqueue waits for the broker |
//! | `JOBS_CONNECT_TIMEOUT` | `3s` | connecting to the broker |
//! | `JOBS_RETENTION` | `168h` | how long succeeded and discarded jobs are kept |
//! | `JOBS_MAX_PAYLOAD_BYTES` | `65536` | largest payload accepted |
//! | `JOBS_SWEEP_AFTER` | `10m` | a due job untouched this long is announced again |

use std::sync::Arc;
use std::time::Duration;

use super::engine::{JobQueue, JobsConfig};
use super::model::{JobError, MAX_PAYLOAD_BYTES};
use super::store::JobStore;
use super::transport::{InProcessQueue, MessageQueue, Namespaced};
use crate::config::{ConfigError, Env, SecretUrl};
use crate::service::Shared;

#[derive(Clone, Debug)]
pub enum JobsBackend {
    InProcess,
    #[cfg(feature = "rabbitmq")]
    RabbitMq(super::rabbitmq::RabbitMqConfig),
}

#[derive(Clone, Debug)]
pub struct JobsSettings {
    pub backend: JobsBackend,
    pub config: JobsConfig,
    /// `JOBS_PREFIX`: the service's kinds' names in a shared queue.
    pub namespace: String,
}

impl JobsSettings {
    pub fn from_env(env: &Env, service: &str) -> Result<Self, ConfigError> {
        let url: SecretUrl = env.shared("JOBS_URL", SecretUrl::new("in-process"))?;
        let defaults = JobsConfig::default();
        let config = JobsConfig {
            max_payload_bytes: env.shared("JOBS_MAX_PAYLOAD_BYTES", MAX_PAYLOAD_BYTES)?,
            publish_timeout: env.shared("JOBS_PUBLISH_TIMEOUT", defaults.publish_timeout)?,
            retention: env.shared("JOBS_RETENTION", defaults.retention)?,
            sweep_after: env.shared("JOBS_SWEEP_AFTER", defaults.sweep_after)?,
        };
        if config.publish_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                var: env.var_name("JOBS_PUBLISH_TIMEOUT"),
                value: "0".into(),
                reason: "an enqueue must not wait for ever".into(),
            });
        }
        let invalid = |reason: &str| ConfigError::Invalid {
            var: env.var_name("JOBS_URL"),
            value: url.to_string(),
            reason: reason.to_owned(),
        };
        let prefix: String = env.shared("JOBS_PREFIX", format!("jobs.{service}"))?;
        let connect_timeout = env.shared("JOBS_CONNECT_TIMEOUT", Duration::from_secs(3))?;
        let backend = match url.expose() {
            "in-process" | "" => JobsBackend::InProcess,
            raw if raw.starts_with("amqp://") || raw.starts_with("amqps://") => {
                #[cfg(feature = "rabbitmq")]
                {
                    raw.parse::<lapin::uri::AMQPUri>()
                        .map_err(|e| invalid(&format!("not an AMQP URL: {e}")))?;
                    let mut rabbit = super::rabbitmq::RabbitMqConfig::new(raw);
                    rabbit.prefix = prefix.clone();
                    rabbit.connect_timeout = connect_timeout;
                    JobsBackend::RabbitMq(rabbit)
                }
                #[cfg(not(feature = "rabbitmq"))]
                {
                    let _ = connect_timeout;
                }
                #[cfg(not(feature = "rabbitmq"))]
                return Err(invalid(
                    "this binary is built without RabbitMQ (the common crate's `rabbitmq` feature)",
                ));
            }
            _ => return Err(invalid("expected in-process or amqp://host:port/vhost")),
        };
        Ok(Self {
            backend,
            config,
            namespace: prefix,
        })
    }

    /// The queue over `store`. In process, the shared queue of the
    /// all-in-one runner if there is one; jobs `store` still holds from an
    /// earlier run (a SQLite file) are handed out again.
    pub async fn open(
        &self,
        store: Arc<dyn JobStore>,
        shared: &Shared,
    ) -> Result<JobQueue, JobError> {
        match &self.backend {
            JobsBackend::InProcess => {
                let transport: Arc<dyn MessageQueue> = match &shared.jobs {
                    Some(transport) => {
                        Arc::new(Namespaced::new(transport.clone(), self.namespace.clone()))
                    }
                    None => Arc::new(InProcessQueue::default()),
                };
                let queue = JobQueue::new(store, transport, self.config);
                queue.recover().await?;
                Ok(queue)
            }
            #[cfg(feature = "rabbitmq")]
            JobsBackend::RabbitMq(rabbit) => {
                // Connected lazily: a service starts while its broker is
                // down, its enqueues failing until it answers.
                let transport = Arc::new(super::rabbitmq::RabbitMqQueue::new(rabbit.clone()));
                Ok(JobQueue::new(store, transport, self.config))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<JobsSettings, ConfigError> {
        JobsSettings::from_env(&Env::from_map("MAIL", vars.iter().copied()), "mail")
    }

    #[test]
    fn jobs_run_in_process_unless_a_broker_is_named() {
        let default = settings(&[]).unwrap();
        assert!(matches!(default.backend, JobsBackend::InProcess));
        assert_eq!(default.config.publish_timeout, Duration::from_secs(5));
        assert_eq!(default.config.max_payload_bytes, MAX_PAYLOAD_BYTES);
    }

    #[cfg(feature = "rabbitmq")]
    #[test]
    fn an_amqp_url_selects_rabbitmq_with_a_per_service_prefix() {
        let got = settings(&[
            ("PLATFORM_JOBS_URL", "amqp://app:secret@mq:5672/%2f"),
            ("MAIL_JOBS_PUBLISH_TIMEOUT", "2s"),
        ])
        .unwrap();
        let JobsBackend::RabbitMq(rabbit) = got.backend else {
            panic!("expected RabbitMQ");
        };
        assert_eq!(rabbit.prefix, "jobs.mail");
        assert_eq!(rabbit.url.expose(), "amqp://app:secret@mq:5672/%2f");
        assert!(
            !format!("{rabbit:?}").contains("secret"),
            "the password is never shown"
        );
        assert_eq!(got.config.publish_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_job_settings_name_their_variable() {
        for (vars, var) in [
            (&[("MAIL_JOBS_URL", "kafka://x")][..], "MAIL_JOBS_URL"),
            (
                &[("MAIL_JOBS_PUBLISH_TIMEOUT", "0s")][..],
                "MAIL_JOBS_PUBLISH_TIMEOUT",
            ),
        ] {
            let err = settings(vars).unwrap_err();
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }
}
