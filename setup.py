# Copyright 2026 The pkg_perception Authors
# SPDX-License-Identifier: Apache-2.0
"""ament_python package definition; also installs with plain pip for use without ROS 2."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'pkg_perception'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={package_name: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.py')),
        ('share/' + package_name + '/config', glob('config/*')),
        ('share/' + package_name + '/models', glob('models/*')),
    ],
    python_requires='>=3.10',
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='pkg_perception maintainers',
    maintainer_email='maintainers@pkg-perception.dev',
    description='RGB-D parcel perception for robotic picking off a conveyor: segmentation, '
    '3D lifting, grasp candidates, simulated camera bags.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'pkg-perception = pkg_perception.cli:main',
            'perception_node = pkg_perception.ros.node:main',
        ],
    },
)
