"""Launchers: vaegan-submit (submitit). The accelerate configs and sbatch templates are
package data: vaegan_dist/configs/accelerate/ and vaegan_dist/configs/slurm/."""
