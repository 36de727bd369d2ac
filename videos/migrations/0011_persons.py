# Persons: named, merged and split clusters (videos.persons).

from django.db import migrations, models

from videos import row_counts

CLUSTER_TABLES = ["videos_facecluster", "videos_bodycluster", "videos_carcluster"]


def reinstall_row_counters(apps, schema_editor):
    # SQLite rebuilds a table to add a NOT NULL column, dropping its row-count triggers (videos.row_counts):
    # they are installed again and the rows recounted (idempotent; on PostgreSQL a recount under a lock).
    row_counts.install(schema_editor.connection, CLUSTER_TABLES)


class Migration(migrations.Migration):

    dependencies = [
        ('videos', '0010_exports'),
    ]

    operations = [
        migrations.AddField(
            model_name='bodycluster',
            name='curated',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='bodycluster',
            name='name',
            field=models.CharField(blank=True, default='', max_length=256),
        ),
        migrations.AddField(
            model_name='carcluster',
            name='curated',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='carcluster',
            name='name',
            field=models.CharField(blank=True, default='', max_length=256),
        ),
        migrations.AddField(
            model_name='facecluster',
            name='curated',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='facecluster',
            name='name',
            field=models.CharField(blank=True, default='', max_length=256),
        ),
        migrations.CreateModel(
            name='ClusterPin',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('face', 'Face'), ('body', 'Body'), ('car', 'Car')], max_length=8)),
                ('cluster_id', models.PositiveBigIntegerField()),
                ('track_id', models.PositiveIntegerField()),
                ('post_policy', models.CharField(max_length=16)),
                ('frame_index', models.PositiveIntegerField()),
                ('video_archive', models.ForeignKey(on_delete=models.deletion.CASCADE, related_name='+',
                                                    to='videos.videoarchive')),
            ],
            options={
                'constraints': [models.UniqueConstraint(
                    fields=('video_archive', 'kind', 'track_id', 'post_policy', 'frame_index'),
                    name='clusterpin_once_per_event')],
            },
        ),
        migrations.RunPython(reinstall_row_counters, migrations.RunPython.noop),
    ]
